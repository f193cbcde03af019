"""MatMul weights quantized one at a time, each read from the export's data file only while onnxruntime's node
quantizer packs it: the float model is never held whole beside its quantized copy.

Loading the float graph and deleting each weight once quantized would not do: protobuf (upb) keeps a message's
bytes in its arena until the whole message is freed, so a loaded model's memory never shrinks. So the graph is
loaded without the MatMul weights, and each one is read into a scratch graph that is dropped after its node.
"""

from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data


def _load(tensor: onnx.TensorProto, folder: Path) -> None:
    """Read an initializer's external bytes into it (onnx then marks it as stored inline), as onnx.load does."""
    load_external_data_for_tensor(tensor, str(folder))


def _matmul_only_weights(graph: onnx.GraphProto) -> set[str]:
    """Constant 2-D weights that only MatMuls read, as their second input: what quantization replaces."""
    shapes = {i.name: len(i.dims) for i in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            readers.setdefault(name, []).append(node.op_type == "MatMul" and position == 1)
    return {name for name, ok in readers.items() if shapes.get(name) == 2 and all(ok)}


def load_for_quantization(onnx_path: Path) -> onnx.ModelProto:
    """The float graph with every initializer in memory except the MatMul weights quantization replaces, which
    stay in the data file until quantize_matmuls reads each one."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    on_disk = _matmul_only_weights(model.graph)
    for tensor in model.graph.initializer:
        if uses_external_data(tensor) and tensor.name not in on_disk:
            _load(tensor, onnx_path.parent)
    return model


def quantize_matmuls(model: onnx.ModelProto, folder: Path, quantizer_for) -> None:
    """Replace each MatMul with a constant weight by what `quantizer_for(node)` (an onnxruntime node quantizer,
    or None to leave the node) makes of it, in graph order; a weight still on disk is read from `folder` into a
    scratch graph for that node alone. Weights still read afterwards are loaded, so the model stands alone
    (the float stubs nothing reads stay behind for the caller to drop)."""
    initializers = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        quantizer = quantizer_for(node) if node.op_type == "MatMul" and node.input[1] in initializers else None
        if quantizer is None:
            nodes.append(node)
            continue
        scratch = onnx.GraphProto()
        weight = scratch.initializer.add()
        weight.CopyFrom(initializers[node.input[1]])
        if uses_external_data(weight):
            _load(weight, folder)
        nodes.extend(quantizer.quantize(node, [scratch]))
        model.graph.initializer.extend(t for t in scratch.initializer if t.name != weight.name)
        del scratch, weight
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    for tensor in model.graph.initializer:
        if uses_external_data(tensor) and tensor.name in used:
            _load(tensor, folder)
