"""The activation memory plan: liveness on a graph whose answer is known, and the report every export
and `luodi inspect` carry."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from luodi.errors import LuodiError
from luodi.inspect import format_report, inspect_model
from luodi.manifest import read_manifest
from luodi.memory_plan import plan_activations


def _chain(path):
    """x -> Relu -> Neg -> Abs -> y on [batch, sequence, 8]: at most two tensors are live at once."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"]),
             helper.make_node("Abs", ["b"], ["y"])]
    shape = ["batch", "sequence", 8]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_liveness_on_a_chain(tmp_path):
    plan = plan_activations(_chain(tmp_path / "chain.onnx"), batch=2, sequence=5, past=0)
    one = 2 * 5 * 8 * 4
    assert plan["naive_bytes"] == 3 * one and plan["planned_peak_bytes"] == 2 * one


def test_export_records_memory(export_dir):
    manifest = read_manifest(export_dir("tiny-llama"))
    memory, spec = manifest.memory, manifest.spec
    assert memory.kv_bytes_per_token == 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * 4
    prefill = memory.activations["prefill_max_context"]
    assert 0 < prefill["planned_peak_bytes"] < prefill["naive_bytes"]
    decode = memory.activations["decode_at_max_context"]
    assert decode["planned_peak_bytes"] < prefill["planned_peak_bytes"]


def test_inspect_plans_a_requested_step(export_dir):
    folder = export_dir("tiny-llama")
    # prefills (longer than 8 tokens: the logits of the last position only)
    small, large = (inspect_model(folder, (1, n, 0))["activation_plan"] for n in (9, 72))
    assert small["planned_peak_bytes"] < large["planned_peak_bytes"]
    assert np.isclose(large["naive_bytes"] / small["naive_bytes"], 8, rtol=0.1)  # everything scales with the tokens
    step = inspect_model(folder, (1, 8, 0))["activation_plan"]
    assert step["largest"]["tensor"] == "logits"  # a speculative step of 8 keeps every position's logits
    assert "planned peak" in format_report(inspect_model(folder, (1, 8, 0)))
    with pytest.raises(LuodiError, match="must be >= 1"):
        inspect_model(folder, (0, 8, 0))


def test_int4_export_is_planned_with_its_folded_weights_apart(tmp_path, monkeypatch):
    """An int4 export (4-bit table shared by the lookup, fp16 scales behind Casts) gets a plan: the lookup's
    rows are sized unpacked, tensors computed from weights alone count as folded weights, not activations,
    and shape inference leaves no file in the working directory."""
    from luodi.exporters import export_model

    monkeypatch.chdir(tmp_path)
    folder = export_model("tiny-qwen2", precision="int4", out=tmp_path / "int4", progress=False)
    memory = read_manifest(folder).memory
    decode = memory.activations["decode_at_max_context"]
    assert 0 < decode["planned_peak_bytes"] < decode["naive_bytes"]
    assert decode["largest"]["tensor"] == "logits"  # not the table's rows or the scales, which are weights
    assert memory.folded_weight_bytes == decode["folded_weight_bytes"] > 0
    assert "computes from them at load" in format_report(inspect_model(folder))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int4"]


def test_kv_bytes_follow_the_cache_dtype(tmp_path):
    """A trt fp16 export's KV cache is fp16: its manifest reports half the KV bytes of the fp32 export's, and the
    manifest says which dtype (the contract's cache_dtype)."""
    from luodi.exporters import export_model

    got = {}
    for precision in ("fp32", "fp16"):
        folder = export_model("tiny-llama", target="trt", precision=precision, out=tmp_path / precision,
                              progress=False)
        manifest = read_manifest(folder)
        got[precision] = (manifest.memory.kv_bytes_per_token, manifest.cache_dtype)
    assert got["fp32"][1] == "float32" and got["fp16"][1] == "float16"
    assert got["fp16"][0] * 2 == got["fp32"][0] > 0
