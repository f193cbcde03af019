"""Liveness-based activation memory plan of an exported graph, for a given batch, new sequence and past.

Every intermediate tensor's shape comes from ONNX Runtime's symbolic shape inference (it knows the
com.microsoft ops the ort passes emit); walking the nodes in order, a tensor is live from the node that
makes it to its last reader, and the plan's peak is the largest total of live bytes — what an allocator
that reuses freed buffers needs — against the naive sum of all of them. The KV cache (present outputs)
is counted apart, as KV bytes, and scratch space inside kernels (e.g. attention scores) is not in the graph.
"""

import ast
import operator

import numpy as np
import onnx
from onnx import helper

from .contract.graph import STEP_WINDOW
from .contract.kv import kv_bytes_per_position
from .contract.manifest import ModelSpec

from .passes.last_token_logits import LOGITS_POSITIONS

# the symbolic dimensions of the exported graph's inputs and outputs, which a step's shapes give values to
STEP_DIMS = ("batch", "sequence", "past_sequence", "total_sequence", LOGITS_POSITIONS)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}


def _evaluate(expr: str, dims: dict[str, int]) -> int:
    """A symbolic dimension ('total_sequence', 'past_sequence + sequence', ...) for the given dims."""
    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in dims:
            return dims[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("max", "Max"):
            return max(walk(a) for a in node.args)
        raise ValueError(f"cannot evaluate dimension {expr!r}")
    return int(walk(ast.parse(expr, mode="eval")))


_CONSTANT_FORMS = {"value_int": onnx.TensorProto.INT64, "value_ints": onnx.TensorProto.INT64,
                   "value_float": onnx.TensorProto.FLOAT, "value_floats": onnx.TensorProto.FLOAT}


def _constants_as_tensors(proto: onnx.ModelProto) -> None:
    """Constant nodes given as value_int(s)/value_float(s) -> a `value` tensor (the only form ONNX Runtime's
    symbolic shape inference reads)."""
    for node in proto.graph.node:
        if node.op_type != "Constant" or len(node.attribute) != 1 or node.attribute[0].name not in _CONSTANT_FORMS:
            continue
        attr = node.attribute[0]
        value = helper.get_attribute_value(attr)
        dims = [len(value)] if isinstance(value, list) else []
        tensor = helper.make_tensor("value", _CONSTANT_FORMS[attr.name], dims, value if dims else [value])
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("value", tensor))


def _external_weights_as_inputs(proto: onnx.ModelProto) -> None:
    """Initializers whose data lives in the external file -> graph inputs of the same type and shape: shape
    inference needs only those, and must not try to read the weights."""
    graph, kept = proto.graph, []
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        else:
            kept.append(tensor)
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _symbolic_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime's symbolic shape inference, with GatherBlockQuantized's rows unpacked (it sizes them as the
    packed bytes: half the hidden size for 4 bits, which then fails at the next MatMulNBits). Driven as its
    own infer_shapes does, except that an incomplete inference raises instead of saving the model to the
    current directory."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference, get_attribute

    class ContribShapes(SymbolicShapeInference):
        def __init__(self):
            super().__init__(int_max=2**31 - 1, auto_merge=True, guess_output_rank=False, verbose=0)
            self.dispatcher_["GatherBlockQuantized"] = self.gather_block_quantized

        def gather_block_quantized(self, node):
            data, indices = self._get_shape(node, 0), self._get_shape(node, 1)
            axis = get_attribute(node, "gather_axis", 0)
            shape = data[:axis] + indices + data[axis + 1:]
            packed = self.known_vi_[node.input[0]].type.tensor_type.elem_type == onnx.TensorProto.UINT8
            if packed and isinstance(shape[-1], int):
                shape[-1] *= 8 // get_attribute(node, "bits", 4)
            scales = self.known_vi_[node.input[2]].type.tensor_type.elem_type
            self.known_vi_[node.output[0]].CopyFrom(helper.make_tensor_value_info(node.output[0], scales, shape))

    inference = ContribShapes()
    inference._preprocess(proto)
    complete = False
    while inference.run_:
        complete = inference._infer_impl()
    inference._update_output_from_vi()
    if not complete:
        raise ValueError("incomplete symbolic shape inference")
    return inference.out_mp_


def _shapes(proto: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Every value's type: ONNX Runtime's symbolic inference (contrib ops), else ONNX's own (standard ops only).
    A shape the graph declares in full wins: inference names a data-dependent dimension with a fresh symbol
    (the last_token_logits row count), which the graph declares as a dimension the plan can size."""
    declared = {v.name: v.type for v in [*proto.graph.value_info, *proto.graph.output]
                if v.type.tensor_type.HasField("shape")
                and all(d.HasField("dim_value") or d.dim_param in STEP_DIMS for d in v.type.tensor_type.shape.dim)}
    _constants_as_tensors(proto)
    _external_weights_as_inputs(proto)
    try:
        inferred = _symbolic_shapes(proto)
    except Exception:  # it reads some standard ops (opset-23 Attention) as the contrib ops of the same name
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    graph = inferred.graph
    return {v.name: v.type for v in [*graph.value_info, *graph.output]} | declared


def _bytes(value_type: onnx.TypeProto, dims: dict[str, int]) -> int:
    tensor = value_type.tensor_type
    size = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
    for dim in tensor.shape.dim:
        if not dim.HasField("dim_value") and not dim.dim_param:
            raise ValueError("a tensor has a dimension of unknown size")
        size *= dim.dim_value if dim.HasField("dim_value") else _evaluate(dim.dim_param, dims)
    return size


def _computed_from_weights(proto: onnx.ModelProto) -> set[str]:
    """Outputs of nodes that read only weights and constants (e.g. the Cast of a quantized export's fp16
    scales, half_scales.py): ONNX Runtime folds them into weights when the session loads."""
    weights = {i.name for i in proto.graph.initializer}
    constant = set(weights)
    for node in proto.graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(name in constant for name in inputs)):
            constant.update(name for name in node.output if name)
    return constant - weights


def plan_activations(model_path, batch: int, sequence: int, past: int) -> dict:
    """{'planned_peak_bytes', 'naive_bytes', 'largest', 'folded_weight_bytes'} of the graph's intermediate
    tensors for one step of `sequence` new tokens per sequence over `past` cached ones; tensors computed from
    weights alone are folded weights (their bytes apart), not activations."""
    proto = onnx.load(str(model_path), load_external_data=False)
    folded = _computed_from_weights(proto)
    types = _shapes(proto)
    dims = dict(zip(STEP_DIMS, (batch, sequence, past, past + sequence,
                                sequence if sequence <= STEP_WINDOW else 1)))
    nodes = list(proto.graph.node)
    kv_outputs = {o.name for o in proto.graph.output if o.name.startswith("present.")}
    read = {name for n in nodes for name in n.input} | {o.name for o in proto.graph.output}
    # an output nothing reads may have no inferred type (a fused norm's optional statistics): left out
    unknown = [name for n in nodes for name in n.output if name and name in read and name not in types]
    if unknown:
        raise ValueError(f"no shape inferred for {len(unknown)} tensors (e.g. {unknown[0]})")
    size = {name: _bytes(types[name], dims) for n in nodes for name in n.output if name and name not in kv_outputs
            and name in types and (name in read or types[name].tensor_type.elem_type)}
    folded_bytes = sum(size.pop(name) for name in folded if name in size)
    last_use = {name: len(nodes) for name in size if name in {o.name for o in proto.graph.output}}
    for index, node in enumerate(nodes):
        for name in node.input:
            if name in size and last_use.get(name, -1) < len(nodes):
                last_use[name] = index
    live = peak = 0
    for index, node in enumerate(nodes):
        live += sum(size.get(name, 0) for name in node.output)
        peak = max(peak, live)
        live -= sum(size[name] for name in set(node.input) | set(node.output)
                    if name in size and last_use.get(name, index) == index)
    largest = max(size, key=size.get) if size else None
    return {"batch": batch, "sequence": sequence, "past": past, "planned_peak_bytes": peak,
            "naive_bytes": sum(size.values()), "largest": {"tensor": largest, "bytes": size.get(largest, 0)},
            "folded_weight_bytes": folded_bytes}


def memory_report(model_path, spec: ModelSpec, weight_bytes: int, kv_dtype: str = "float32") -> dict:
    """What a deployer needs to tell whether a model fits a device: weight bytes (and those the runtime computes
    from them at load), KV-cache bytes (per token and at max context, batch 1) and the activation plan of a
    max-context prefill and of a decode step at max context (or why no plan could be made)."""
    context = spec.max_context
    kv_per_token = kv_bytes_per_position(spec.num_layers, spec.num_kv_heads, spec.head_dim, kv_dtype)
    report = {"weight_bytes": weight_bytes, "kv_bytes_per_token": kv_per_token,
              "kv_bytes_at_max_context": kv_per_token * context}
    try:
        report["activations"] = {"prefill_max_context": plan_activations(model_path, 1, context, 0),
                                 "decode_at_max_context": plan_activations(model_path, 1, 1, context - 1)}
        report["folded_weight_bytes"] = report["activations"]["decode_at_max_context"]["folded_weight_bytes"]
    except ValueError as e:
        report["activations"] = {"unavailable": str(e)}
    return report
