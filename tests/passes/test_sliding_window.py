"""Sliding windows and soft-capping through the ort passes: what GroupQueryAttention's local_window_size means
in the installed onnxruntime (the pass's W depends on it), and the attributes each layer of the traced Gemma
models ends with (the exports' parity checks, tests/test_families.py, show the numbers agree)."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper

from luodi.exporters.spec import SLIDING


def _probe(local_window_size: int, tokens: int = 10, head: int = 16) -> list[int]:
    """How many keys each query of a prompt sees under GroupQueryAttention (equal scores; v = identity rows,
    so each output row holds the attention weights)."""
    names = ["q", "k", "v", "past_k", "past_v"]
    node = helper.make_node("GroupQueryAttention", names + ["seqlens_k", "total"], ["y", "present_k", "present_v"],
                            domain="com.microsoft", num_heads=1, kv_num_heads=1, local_window_size=local_window_size)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names]
    inputs += [helper.make_tensor_value_info(n, TensorProto.INT32, None) for n in ("seqlens_k", "total")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "present_k", "present_v")]
    model = helper.make_model(helper.make_graph([node], "probe", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    zeros = np.zeros((1, tokens, head), np.float32)
    v = zeros.copy()
    v[0, np.arange(tokens), np.arange(tokens)] = 1
    empty = np.zeros((1, 1, tokens, head), np.float32)
    y = session.run(["y"], {"q": zeros, "k": zeros, "v": v, "past_k": empty, "past_v": empty,
                            "seqlens_k": np.array([tokens - 1], np.int32), "total": np.array(tokens, np.int32)})[0]
    return [int((row[:tokens] > 0).sum()) for row in y[0]]


def test_local_window_size_counts_the_query_itself():
    """transformers: a sliding layer's query sees the W keys with q - k < W, its own among them; the pass sets
    local_window_size = W, which is right only while onnxruntime counts the same W keys."""
    assert _probe(4) == [1, 2, 3, 4, 4, 4, 4, 4, 4, 4]


def _gqa_nodes(folder) -> list[ir.Node]:
    return [n for n in ir.load(folder / "model.onnx").graph if n.op_type == "GroupQueryAttention"]


def test_sliding_layers_get_their_window_and_full_layers_none(export_dir):
    from luodi.manifest import read_manifest

    folder = export_dir("tiny-gemma3")
    spec = read_manifest(folder).spec
    nodes = _gqa_nodes(folder)
    assert len(nodes) == spec.num_layers  # graph order is layer order
    for node, kind in zip(nodes, spec.layer_types):
        want = spec.sliding_window if kind == SLIDING else -1
        assert node.attributes.get_int("local_window_size", -1) == want
        assert node.attributes.get_float("scale") == np.float32(spec.attention_scale)


def test_soft_capped_attention_keeps_its_cap(export_dir):
    nodes = _gqa_nodes(export_dir("tiny-gemma2"))
    assert len(nodes) == 4 and all(n.attributes.get_float("softcap") == 2.0 for n in nodes)
    assert [n.attributes.get_int("local_window_size", -1) for n in nodes] == [8, -1, 8, -1]
