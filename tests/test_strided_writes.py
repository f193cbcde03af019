"""Strided initializers (a torch transpose, a numpy transpose) are saved with their C-order bytes, a block of
rows at a time: never a whole contiguous copy (luodi/exporters/strided_writes.py)."""

import tracemalloc

import numpy as np
import onnx
import onnx_ir as ir
import torch
from onnx import numpy_helper

from luodi.exporters import strided_writes
from luodi.exporters.onnx_export import save_onnx


def _model(initializers: dict) -> ir.Model:
    """A graph returning the sum of its initializers' first rows (so every one is read)."""
    values = [ir.Value(name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
              for name, tensor in initializers.items()]
    graph = ir.Graph([], [], nodes=[], initializers=values, opset_imports={"": 18}, name="g")
    out = values[0]
    for value in values[1:]:
        node = ir.node("Add", [out, value])
        graph.append(node)
        out = node.outputs[0]
        out.shape, out.type = value.shape, value.type
    graph.outputs.append(out)
    return ir.Model(graph, ir_version=10)


def test_strided_initializers_are_saved_with_their_c_order_bytes(tmp_path):
    table = torch.randn(96, 40)
    rows = np.random.default_rng(0).standard_normal((40, 96), dtype=np.float32)
    model = _model({"torch_t": ir.tensor(table.t(), name="torch_t"), "numpy_t": ir.tensor(rows.T, name="numpy_t"),
                    "plain": ir.tensor(np.ones((96, 40), np.float32), name="plain")})
    save_onnx(model, tmp_path)
    stored = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "model.onnx")).graph.initializer}
    np.testing.assert_array_equal(stored["torch_t"], table.t().numpy())
    np.testing.assert_array_equal(stored["numpy_t"], rows.T)
    kinds = {name: type(v.const_value).__name__ for name, v in model.graph.initializers.items()}
    assert kinds == {"torch_t": "RowBlockTensor", "numpy_t": "RowBlockTensor", "plain": "Tensor"}


def test_a_strided_tensor_is_written_without_a_whole_copy(monkeypatch, tmp_path):
    monkeypatch.setattr(strided_writes, "BLOCK_BYTES", 64 << 10)
    array = np.random.default_rng(1).standard_normal((2048, 1024), dtype=np.float32).T  # 8 MB, strided
    tensor = strided_writes.RowBlockTensor(array)
    tracemalloc.start()
    with open(tmp_path / "data", "wb") as file:
        tensor.tofile(file)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20  # blocks of 64 KB, not the 8 MB array
    np.testing.assert_array_equal(np.fromfile(tmp_path / "data", np.float32).reshape(array.shape), array)
