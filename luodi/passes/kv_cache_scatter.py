"""In-place KV cache with standard ops: the KV concatenation -> TensorScatter into a fixed buffer.

TensorRT's KV-cache update layer (what its parser makes of the opset-24 TensorScatter) needs a cache input
whose sequence length is static. So for each layer's present = Concat(past, new, axis=2) (the canonical
decoder's form, [batch, kv_heads, sequence, head_dim]; past a graph input, present a graph output):

    present = TensorScatter(past, new, write_index, axis=2)   # past and present: [b, kv, max_context, d]
    attention reads present[:, :, :total]

where total is the attention mask's width and write_index = total - new positions, the same for every row
(rows are left-padded, so cache slots line up with mask columns). The KV inputs and outputs get the static
length the model's metadata records (`luodi.max_context`); a runtime binds one buffer per layer and kind as
both past and present, so a step writes its new positions and copies nothing (manifest: kv_cache
scatter_buffer). The attention that reads the sliced cache stays as traced (fuse_attention matches the
concat form only).
"""

import numpy as np
import onnx_ir as ir

from ..contract.kv import SCATTER_BUFFER
from .base import LuodiPass

MASK_INPUT, IDS_INPUT = "attention_mask", "input_ids"
MAX_CONTEXT_KEY = "luodi.max_context"
SCATTER_OPSET = 24


class _Builder:
    """Inserts nodes before an anchor node, with int64 constants as initializers."""

    def __init__(self, graph: ir.Graph, anchor: ir.Node):
        self.graph, self.anchor = graph, anchor

    def const(self, *values: int) -> ir.Value:
        """A shared int64 vector initializer holding `values`."""
        name = "kv_scatter.i64_" + "_".join(str(v) for v in values)
        if name not in self.graph.initializers:
            value = ir.Value(name=name, const_value=ir.tensor(np.array(values, dtype=np.int64), name=name))
            self.graph.register_initializer(value)
        return self.graph.initializers[name]

    def node(self, op: str, inputs: list, name: str, **attributes) -> ir.Value:
        node = ir.node(op, inputs, attributes=attributes, name=name)
        self.graph.insert_before(self.anchor, node)
        return node.outputs[0]

    def part(self, x: ir.Value, start: int, end: int, name: str) -> ir.Value:
        """x[start:end] along axis 0."""
        return self.node("Slice", [x, self.const(start), self.const(end)], name)


def _write_index(b: _Builder, mask: ir.Value, ids: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(write_index [batch], total [1]): the slot this step's first position goes to, and the mask width."""
    total = b.part(b.node("Shape", [mask], "kv_scatter/mask_shape"), 1, 2, "kv_scatter/total")
    ids_shape = b.node("Shape", [ids], "kv_scatter/ids_shape")
    new, batch = b.part(ids_shape, 1, 2, "kv_scatter/new"), b.part(ids_shape, 0, 1, "kv_scatter/batch")
    write = b.node("Expand", [b.node("Sub", [total, new], "kv_scatter/past"), batch], "kv_scatter/write_index")
    return write, total


def _reads_length(shape: ir.Node) -> bool:
    """Whether a Shape node on a [b, kv, sequence, d] cache includes the sequence dimension."""
    start, end = shape.attributes.get_int("start", 0) % 4, shape.attributes.get_int("end", 4)
    return start <= 2 < (end % 4 if end < 0 else end)


def _logical_past_shape(graph: ir.Graph, shape: ir.Node, write: ir.Value) -> None:
    """A Shape read of a past input (the traced graph adds its length to the new positions' count to size
    the repeated keys) now sees the past length, not the buffer's: dim 2 becomes write_index[0]."""
    b, name = _Builder(graph, shape), shape.name
    full = b.node("Shape", [shape.inputs[0]], f"{name}/buffer_shape")
    logical = b.node("Concat", [b.part(full, 0, 2, f"{name}/head"), b.part(write, 0, 1, f"{name}/past_length"),
                                b.part(full, 3, 4, f"{name}/tail")], f"{name}/logical", axis=0)
    start, end = shape.attributes.get_int("start", 0), shape.attributes.get_int("end", 4)
    shape.outputs[0].replace_all_uses_with(b.part(logical, start, end, f"{name}/part"))
    graph.remove(shape, safe=True)


class KvCacheScatter(LuodiPass):
    name = "kv_cache_scatter"
    description = "KV concat -> TensorScatter into a fixed max-context buffer (standard ops)"
    kv_layout = SCATTER_BUFFER.name

    def apply(self, model: ir.Model) -> int:
        graph = model.graph
        inputs = {v.name: v for v in graph.inputs}
        mask, ids = inputs.get(MASK_INPUT), inputs.get(IDS_INPUT)
        max_context = model.metadata_props.get(MAX_CONTEXT_KEY)
        concats = [n for n in graph if n.op_type == "Concat" and n.domain == "" and len(n.inputs) == 2
                   and n.attributes.get_int("axis", 0) in (2, -2) and n.inputs[0].is_graph_input()
                   and n.inputs[0].name.startswith("past_key_values.") and n.outputs[0].is_graph_output()]
        if mask is None or ids is None or max_context is None or not concats:
            return 0
        pasts = {c.inputs[0] for c in concats}
        layers = {past.name.rsplit(".", 1)[0] for past in pasts}
        write, total = _write_index(_Builder(graph, next(iter(graph))), mask, ids)
        for concat in concats:
            self._rewrite(graph, concat, write, total, int(max_context))
        for shape in [n for n in graph if n.op_type == "Shape" and n.inputs[0] in pasts and _reads_length(n)]:
            _logical_past_shape(graph, shape, write)
        if model.opset_imports.get("", 0) < SCATTER_OPSET:
            model.opset_imports[""] = graph.opset_imports[""] = SCATTER_OPSET
        return len(layers)

    def _rewrite(self, graph: ir.Graph, concat: ir.Node, write: ir.Value, total: ir.Value, max_context: int):
        b = _Builder(graph, concat)
        past, new = concat.inputs
        present = concat.outputs[0]
        scattered = b.node("TensorScatter", [past, new, write], f"{concat.name}/scatter", axis=2)
        visible = b.node("Slice", [scattered, b.const(0), total, b.const(2)], f"{concat.name}/visible")
        graph.outputs[graph.outputs.index(present)] = scattered
        present.replace_all_uses_with(visible)
        name, present.name = present.name, None
        scattered.name = name
        for value in (past, scattered):
            value.shape = ir.Shape([past.shape[0], past.shape[1], max_context, past.shape[3]])
            value.dtype = past.dtype
        graph.remove(concat, safe=True)
