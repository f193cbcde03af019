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
    memory, spec = manifest["memory"], manifest["spec"]
    assert memory["kv_bytes_per_token"] == 2 * spec["num_layers"] * spec["num_kv_heads"] * spec["head_dim"] * 4
    prefill = memory["activations"]["prefill_max_context"]
    assert 0 < prefill["planned_peak_bytes"] < prefill["naive_bytes"]
    decode = memory["activations"]["decode_at_max_context"]
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
