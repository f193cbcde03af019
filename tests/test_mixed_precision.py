"""Mixed int4/int8 under a size budget: the simulated quantizer is the one MatMulNBits runs, the byte count is
what it stores, the plan spends the budget where it removes the most error, and the export keeps its promise."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import luodi
from luodi.errors import LuodiError
from luodi.exporters import export_model
from luodi.manifest import read_manifest
from luodi.quantization.mixed_precision import MatMulSensitivity, nbits_bytes, plan
from luodi.quantization.rtn import fake_quantize

from test_parity import _max_diff
from test_quantization import TEXT, _bytes


@pytest.mark.parametrize("method", ["rtn", "minmax"])
@pytest.mark.parametrize("bits", [4, 8])
def test_fake_quantize_is_what_matmulnbits_computes(bits, method, tmp_path):
    """X = identity makes the MatMulNBits output its dequantized weight, which must be the simulated grid's
    (minmax: after its lowering to integer zero points and block offsets); with the scales and offsets then
    stored as fp16 it stays within their rounding, and the bytes stored are nbits_bytes'."""
    import onnxruntime as ort

    from luodi.quantization.float_zero_points import lower_float_zero_points
    from luodi.quantization.half_scales import HALF_RTOL, store_scales_half
    from luodi.quantization.ort_weights import WeightQuantization, _algo_config, _min_max_quantizer, _quantizer_module
    from luodi.quantization.rtn import fake_quantize_minmax

    k, n, group = 64, 24, 32
    w = np.random.default_rng(bits).normal(size=(k, n)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [k, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [k, n])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    config = _algo_config(WeightQuantization(bits=bits, method=method, group_size=group), [])
    quantizer = _quantizer_module().MatMulNBitsQuantizer(model, bits=bits, block_size=group, is_symmetric=False,
                                                         algo_config=config)
    if method == "minmax":
        quantizer.node_quantizer = _min_max_quantizer(config)
    quantizer.process()
    quantized = quantizer.model.model
    offsets = lower_float_zero_points(quantized)
    assert bool(offsets) == (method == "minmax")

    def dequantized():
        session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": np.eye(k, dtype=np.float32)})[0]

    grid = fake_quantize_minmax if method == "minmax" else fake_quantize
    np.testing.assert_allclose(grid(w, bits, group), dequantized(), rtol=0, atol=1e-5)
    assert store_scales_half(quantized, offsets) > 0
    np.testing.assert_allclose(grid(w, bits, group), dequantized(), rtol=0, atol=2 * HALF_RTOL * np.abs(w).max())
    stored = sum(i.ByteSize() - len(i.name) - 16 for i in quantized.graph.initializer
                 if not i.name.startswith("block_sum."))  # the block-sum constant is shared by every MatMul
    assert abs(stored - nbits_bytes(k, n, bits, group, offsets=method == "minmax")) <= 48  # protobuf framing aside


def test_plan_spends_the_budget_where_it_removes_most_error_per_byte():
    big, small = (576, 49152), (576, 576)
    s = [MatMulSensitivity("head", *big, 0.02, 0.0001), MatMulSensitivity("q", *small, 0.05, 0.0002),
         MatMulSensitivity("o", *small, 0.001, 0.00001)]
    base = sum(nbits_bytes(*x, 4, 32) for x in (big, small, small))
    extra = {name: nbits_bytes(*shape, 8, 32) - nbits_bytes(*shape, 4, 32)
             for name, shape in (("head", big), ("q", small), ("o", small))}
    assert plan(s, 0, base, 32)["int8"] == []
    assert plan(s, 0, base + extra["q"], 32)["int8"] == ["q"]  # the most error removed per byte first
    assert plan(s, 0, base + extra["q"] + extra["o"], 32)["int8"] == ["q", "o"]
    everything = plan(s, 1000, base + sum(extra.values()) + 1000, 32)
    assert sorted(everything["int8"]) == ["head", "o", "q"] and everything["planned_mb"] <= everything["budget_mb"]
    with pytest.raises(LuodiError, match="cannot be met: everything at int4 is"):
        plan(s, 0, base - 1, 32)
    exact = MatMulSensitivity("k", *small, 1e-14, 1e-6)  # on its int4 grid already (minmax on a Q4_1 weight)
    assert plan(s + [exact], 0, base + sum(extra.values()) * 3, 32)["int8"] == ["q", "o", "head"]


@pytest.fixture(scope="module")
def calibration_ids(export_dir):
    return tuple(luodi.load(export_dir("tiny-qwen2")).tokenizer.encode(open(TEXT).read())[:1024])


@pytest.mark.parametrize("method", ["rtn", "minmax"])
def test_a_budget_between_int4_and_int8_mixes_them(method, export_dir, calibration_ids, reference, tmp_path):
    def export(name, precision="int4", **settings):
        return export_model("tiny-qwen2", precision=precision, out=tmp_path / name, progress=False,
                            quantization=settings or None)

    int4, all_int8 = export("int4", method=method), export("int8", precision="int8")
    budget = (_bytes(int4) + _bytes(all_int8)) / 2 / 1e6
    mixed = export("mixed", method=method, calibration=calibration_ids, size_budget_mb=budget)
    info = read_manifest(mixed).quantization["mixed_precision"]
    assert _bytes(mixed) <= budget * 1e6 and info["files_mb"] * 1e6 == pytest.approx(_bytes(mixed), abs=5e3)
    assert 0 < len(info["int8"]) < len(info["sensitivity"])
    assert all(v["error_int8"] < v["error_int4"] and v["kl_int4"] > 0 for v in info["sensitivity"].values())
    assert info["harm_planned"] < info["harm_int4"]
    errors = {name: _max_diff("tiny-qwen2", lambda _, f=folder: f, reference, statistic=np.mean)
              for name, folder in (("int4", int4), ("mixed", mixed))}
    assert errors["mixed"] < errors["int4"]


@pytest.mark.parametrize("settings, message", [
    ({"size_budget_mb": 0.001}, "cannot be met"),
    ({"size_budget_mb": 10.0, "keep": ("lm_head",)}, "give one of them"),
    ({"size_budget_mb": -1.0}, "must be positive")])
def test_bad_budgets_are_refused(settings, message, calibration_ids, tmp_path):
    with pytest.raises(LuodiError, match=message):
        export_model("tiny-qwen2", precision="int4", out=tmp_path / "x", progress=False,
                     quantization={"calibration": calibration_ids, **settings})
    assert not (tmp_path / "x").exists()


def test_a_budget_needs_calibration_and_int4(calibration_ids, tmp_path):
    with pytest.raises(LuodiError, match="--calib FILE"):
        export_model("tiny-qwen2", precision="int4", out=tmp_path / "x", progress=False,
                     quantization={"size_budget_mb": 10.0})
    with pytest.raises(LuodiError, match="use it with --precision int4"):
        export_model("tiny-qwen2", precision="int8", out=tmp_path / "y", progress=False,
                     quantization={"size_budget_mb": 10.0, "calibration": calibration_ids})
