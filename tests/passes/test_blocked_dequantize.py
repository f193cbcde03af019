"""weights_int4 / weights_int8: MatMul weights become symmetric blocked DequantizeLinear (zero point 0, block
32 along the input dimension); the dequantized weight is within half a step of the float one, ONNX Runtime
runs the result, weights whose input dimension is not a multiple of 32 stay float, and TensorRT's parser
takes a whole int4 model (the export's legality check)."""

import numpy as np
import pytest
from onnx import helper

from luodi.exporters import export_model
from luodi.manifest import read_manifest
from luodi.quantization.blocked_dequantize import BLOCK, WeightsInt4, WeightsInt8, quantize_blocked

from .graphs import const, model, run

RNG = np.random.default_rng(0)
W = RNG.normal(size=(64, 24)).astype(np.float32)
W_ODD = RNG.normal(size=(24, 8)).astype(np.float32)
X = RNG.normal(size=(3, 64)).astype(np.float32)


def _graph():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("MatMul", ["h", "w_odd"], ["y"], name="mm_odd")]
    return model(nodes, [("x", [3, 64])], [("y", [3, 8])], [const("w", W), const("w_odd", W_ODD)], opset=21)


@pytest.mark.parametrize("bits", [4, 8])
def test_blocked_values_are_within_half_a_step(bits):
    q, scale = quantize_blocked(W, bits)
    assert q.shape == W.shape and scale.shape == (64 // BLOCK, 24)
    top = (1 << (bits - 1)) - 1
    values = q.astype(np.float32)
    assert np.abs(values).max() <= top
    dequantized = (values.reshape(2, BLOCK, 24) * scale[:, None, :]).reshape(64, 24)
    assert np.all(np.abs(dequantized - W) <= np.repeat(scale, BLOCK, axis=0) / 2 + 1e-6)


@pytest.mark.parametrize("graph_pass, bits, tolerance", [(WeightsInt4, 4, 0.6), (WeightsInt8, 8, 0.05)])
def test_pass_dequantizes_eligible_weights_and_ort_runs_it(graph_pass, bits, tolerance):
    want = run(_graph(), {"x": X})[0]
    m = _graph()
    p = graph_pass()
    p(m)
    assert p.count == 1  # w_odd's input dimension (24) is not a multiple of the block
    (dq,) = [n for n in m.graph if n.op_type == "DequantizeLinear"]
    assert dq.attributes.get_int("block_size") == BLOCK and len(dq.inputs) == 2  # no zero point: symmetric
    assert "w" not in m.graph.initializers and "w_odd" in m.graph.initializers
    got = run(m, {"x": X})[0]
    assert np.abs(got - want).max() < tolerance * np.abs(want).max() / 4


def test_trt_int4_export_passes_the_parser(tmp_path):
    folder = export_model("tiny-llama", target="trt", precision="int4", out=tmp_path / "trt4", progress=False)
    manifest = read_manifest(folder)
    assert manifest.passes["weights_int4"] == 7 * 2 + 1  # q, k, v, o, gate, up, down per layer + the LM head
    assert manifest.parity["max_abs_diff"] < 1.0
    assert manifest.tensorrt.legality.startswith(("tensorrt", "allow-list"))
