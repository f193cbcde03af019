"""The pass contract: onnx-ir's in-place pass, which also records how many times it changed the graph."""

from collections import Counter

import onnx_ir as ir
import onnx_ir.passes.common as common
from onnxscript.rewriter import pattern

from ..contract.graph import LOGITS, is_past_name
from ..errors import LuodiError

# the default-domain opset of the standard fused ops (Attention, RotaryEmbedding) passes emit
FUSED_OPS_OPSET = 23
# Value.meta key of an initializer that is a slice of another one's data: (source name, byte offset);
# save_onnx stores it as a range of the source's bytes, not a copy
VIEW_OF = "luodi.view_of"


class LuodiPass(ir.passes.InPlacePass):
    """A named graph pass; `count` holds how many matches it rewrote in its last run.

    `kv_layout`: the KV-cache layout (luodi.contract.kv) the graph has after this pass matched; such a pass
    ensures it rewrote every layer's cache or none, since a partly rewritten cache has no layout a runtime
    could drive. The export reads the layout from the pass that made it, never from match counts."""

    name = ""
    description = ""
    kv_layout: str | None = None

    def __init__(self):
        super().__init__()
        self.count = 0

    def apply(self, model: ir.Model) -> int:
        """Rewrite the model in place; return the number of matches rewritten."""
        raise NotImplementedError

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.count = self.apply(model)
        return ir.passes.PassResult(model, modified=self.count > 0)

    def ensures(self, model: ir.Model) -> None:
        """A pass that makes a KV layout rewrote all of the graph's KV caches or none."""
        layers = sum(1 for v in model.graph.inputs if is_past_name(v.name)) // 2
        if self.kv_layout and self.count not in (0, layers):
            raise LuodiError(f"{self.name} rewrote {self.count} of {layers} layers; a model needs all or none")


class RewritePass(LuodiPass):
    """A pass made of onnxscript rewrite rules (each: pattern + check + rewrite).

    `min_opset`: the default-domain opset the ops it emits need; the model's is raised to it on a match.
    `commute`: also match the patterns with the operands of commutative ops swapped.
    """

    min_opset: int | None = None
    commute = False

    def rules(self) -> list:
        """The rewrite rules this pass applies."""
        raise NotImplementedError

    def apply(self, model: ir.Model) -> int:
        count = pattern.RewriteRuleSet(self.rules(), commute=self.commute).apply_to_model(model)
        if count:
            common.RemoveUnusedNodesPass()(model)
            if self.min_opset and model.opset_imports.get("", 0) < self.min_opset:
                model.opset_imports[""] = model.graph.opset_imports[""] = self.min_opset
        return count


def op_histogram(model: ir.Model) -> dict[str, int]:
    """{op type (domain-qualified when not the default domain): count} of a model's main graph."""
    return dict(Counter(f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in model.graph).most_common())


def constant_matmul_weight(node: ir.Node) -> ir.Value | None:
    """The weight of a default-domain MatMul when it is a 2-D constant initializer, else None."""
    if node.op_type != "MatMul" or node.domain != "" or len(node.inputs) != 2:
        return None
    weight = node.inputs[1]
    if weight is None or weight.const_value is None or not weight.is_initializer():
        return None
    return weight if weight.shape is not None and len(weight.shape) == 2 else None


def softcap_input(value: ir.Value) -> ir.Value | None:
    """x when value = Mul(Tanh(Div(x, c)), c) with one constant c (soft-capping, as Gemma 2 traces it), else None."""
    mul = value.producer()
    if mul is None or mul.op_type != "Mul" or mul.domain != "":
        return None
    tanh = mul.inputs[0].producer()
    div = tanh.inputs[0].producer() if tanh is not None and tanh.op_type == "Tanh" else None
    if div is None or div.op_type != "Div" or scalar(div.inputs[1]) is None or \
            scalar(div.inputs[1]) != scalar(mul.inputs[1]):
        return None
    return div.inputs[0]


def logits_head(graph: ir.Graph) -> tuple[ir.Node | None, list[ir.Value]]:
    """(the node making the logits before any final soft-capping, the values from its output to the logits
    output): the LM head, and what follows it element-wise."""
    logits = next((v for v in graph.outputs if v.name == LOGITS), None)
    if logits is None:
        return None, []
    tail, value = [logits], logits
    while (capped := softcap_input(value)) is not None:
        tanh_out = value.producer().inputs[0]
        tail = [capped, tanh_out.producer().inputs[0], tanh_out, *tail]  # x, x / c, tanh(x / c), logits
        value = capped
    return value.producer(), tail


def lm_head(graph: ir.Graph) -> ir.Node | None:
    """The MatMul making the logits (before a final soft-capping), if its weight is a 2-D initializer."""
    head, _ = logits_head(graph)
    return head if head is not None and constant_matmul_weight(head) is not None else None


def weight_bytes(model: ir.Model) -> int:
    """Bytes of a model's weights, read from metadata, not data, each stored byte once: a view (VIEW_OF,
    lm_head_view) is part of another initializer, and a saved view names a range of the same data file."""
    spans, total = {}, 0
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is None or VIEW_OF in value.meta:
            continue
        if isinstance(tensor, ir.ExternalTensor):
            start = tensor.offset or 0
            spans.setdefault(str(tensor.path), []).append((start, start + tensor.nbytes))
        else:
            total += tensor.nbytes
    for ranges in spans.values():
        end = 0
        for start, stop in sorted(ranges):
            total += max(0, stop - max(start, end))
            end = max(end, stop)
    return total


def scalar(value: ir.Value):
    """The Python scalar a constant value holds (a 0-d or one-element tensor), else None."""
    const = ir.convenience.get_const_tensor(value)
    if const is None:
        return None
    array = const.numpy()
    return array.reshape(-1)[0].item() if array.size == 1 else None
