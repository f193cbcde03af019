"""Block scales and offsets stored as fp16 behind a Cast (luodi/quantization/half_scales.py)."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from luodi.manifest import read_manifest
from luodi.quantization.half_scales import HALF_RTOL, store_scales_half


def _matmul_nbits(scales: np.ndarray, k: int = 64, n: int = 8, block: int = 32):
    """One 4-bit MatMulNBits (default zero points) over random values with the given scales [n, k/block]."""
    q = np.random.default_rng(0).integers(0, 16, (n, k)).astype(np.uint8)
    packed = (q[:, 0::2] | q[:, 1::2] << 4).reshape(n, k // block, block // 2)
    node = helper.make_node("MatMulNBits", ["x", "w_Q4", "w_scales"], ["y"], domain="com.microsoft", K=k, N=n,
                            bits=4, block_size=block)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(packed, "w_Q4"),
                               numpy_helper.from_array(scales.reshape(-1).astype(np.float32), "w_scales")])
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_scales_are_stored_half_and_read_as_float():
    scales = np.random.default_rng(1).uniform(0.01, 0.1, (8, 2))
    model = _matmul_nbits(scales)
    x = np.random.default_rng(2).standard_normal((1, 64)).astype(np.float32)
    before = _run(model, x)
    assert store_scales_half(model) == scales.size * 2
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert types == {"w_Q4": TensorProto.UINT8, "w_scales.fp16": TensorProto.FLOAT16}
    assert model.graph.node[0].op_type == "Cast" and model.graph.node[0].output[0] == "w_scales"
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, x), before, rtol=0, atol=2 * HALF_RTOL * np.abs(before).max())


def test_scales_out_of_half_range_stay_float():
    scales = np.full((8, 2), 0.05)
    scales[3, 1] = 1e-6  # below fp16's normal range: rounding would cost more than HALF_RTOL
    model = _matmul_nbits(scales)
    assert store_scales_half(model) == 0
    assert {i.name for i in model.graph.initializer} == {"w_Q4", "w_scales"}
    assert all(n.op_type != "Cast" for n in model.graph.node)


def test_quantized_exports_store_no_float_scales(quantized):
    """An int4 export (minmax: scales and block offsets) keeps no fp32 scales in its file."""
    folder = quantized("int4", method="minmax")
    assert read_manifest(folder).quantization["fp16_scales_saved_mb"] > 0
    model = onnx.load(folder / "model.onnx", load_external_data=False)
    inits = {i.name: i.data_type for i in model.graph.initializer}
    casts = {n.output[0] for n in model.graph.node if n.op_type == "Cast" and n.input[0] in inits}
    scales = {n.input[2] for n in model.graph.node if n.op_type in ("MatMulNBits", "GatherBlockQuantized")}
    offsets = {n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.input[1].endswith(".offsets")}
    assert scales and offsets and scales | offsets <= casts
    assert all(inits[f"{name}.fp16"] == TensorProto.FLOAT16 for name in scales | offsets)
