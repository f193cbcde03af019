"""fuse_rotary and fuse_attention on a traced (cleanup-only) tiny Llama: they match every layer, keep the
logits, and leave alone graphs whose constants say it is not the operation they fuse."""

import numpy as np
import onnx_ir as ir
import pytest

from luodi.exporters import export_model
from luodi.passes import run_passes
from luodi.passes.attention_3d import Attention3d
from luodi.passes.fuse_attention import FuseAttention
from luodi.passes.fuse_rotary import FuseRotary

from .graphs import run


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """Path of tiny-llama's traced graph with only the cleanup pass applied."""
    out = export_model("tiny-llama", out=tmp_path_factory.mktemp("traced") / "t", passes="cleanup", progress=False)
    return out / "model.onnx"


def _feeds(batch=2, seq=5, past=3):
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 300, (batch, seq)), "attention_mask": np.ones((batch, past + seq), np.int64),
             "position_ids": np.tile(np.arange(past, past + seq), (batch, 1))}
    feeds["attention_mask"][1, :2] = 0  # a left-padded row
    for i in range(2):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = rng.standard_normal((batch, 2, past, 16)).astype(np.float32)
    return feeds


def _apply(path, graph_pass, mutate=None):
    before, after = ir.load(path), ir.load(path)
    if mutate:
        mutate(before)
        mutate(after)
    graph_pass(after)
    feeds = _feeds()
    for got, want in zip(run(after, feeds), run(before, feeds)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    return graph_pass.count, [n.op_type for n in after.graph]


def test_rotary_fuses_q_and_k_of_every_layer(traced):
    count, ops = _apply(traced, FuseRotary())
    assert count == 4 and ops.count("RotaryEmbedding") == 4 and "Neg" not in ops


def _const(value):
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy().tolist()


def _set_input(model, node, index, array):
    value = ir.Value(name=f"{node.name}.in{index}", const_value=ir.tensor(array))
    model.graph.register_initializer(value)
    node.replace_input_with(index, value)


def _second_half_twice(model):
    """Take the second half where the first belongs: concat(-x2, x2) is no longer a rotation."""
    for node in list(model.graph):
        if node.op_type == "Slice" and _const(node.inputs[1]) == [0] and _const(node.inputs[2]) == [8]:
            _set_input(model, node, 1, np.array([8], dtype=np.int64))
            _set_input(model, node, 2, np.array([16], dtype=np.int64))


def test_rotary_leaves_other_splits_alone(traced):
    count, ops = _apply(traced, FuseRotary(), mutate=_second_half_twice)
    assert count == 0 and "RotaryEmbedding" not in ops


def test_attention_fuses_every_layer_with_the_cache(traced):
    count, ops = _apply(traced, FuseAttention())
    assert count == 2 and ops.count("Attention") == 2 and "Softmax" not in ops


def _soft_mask(model):
    """Masked scores set to -10 instead of the dtype minimum: not the masking the fused op reproduces."""
    for node in list(model.graph):
        if node.op_type == "Where" and (_const(node.inputs[2]) or 0) < -1e30:
            _set_input(model, node, 2, np.array(-10.0, dtype=np.float32))


def test_attention_leaves_other_masking_alone(traced):
    count, ops = _apply(traced, FuseAttention(), mutate=_soft_mask)
    assert count == 0 and "Softmax" in ops


def test_full_pipeline_after_attention_and_rotary(traced):
    model = ir.load(traced)
    counts = run_passes(model, ["fuse_rms_norm", "fuse_skip_norm", "fuse_rotary", "fuse_attention", "pack_matmuls"])
    assert counts == {"fuse_rms_norm": 5, "fuse_skip_norm": 4, "fuse_rotary": 4, "fuse_attention": 2,
                      "pack_matmuls": 4}


class _Pipeline:
    """Several passes as one (for _apply): the count is the last pass's."""

    def __init__(self, *passes):
        self.passes, self.count = passes, 0

    def __call__(self, model):
        for graph_pass in self.passes:
            graph_pass(model)
        self.count = self.passes[-1].count


def test_attention_3d_drops_the_head_reshapes(traced):
    count, ops = _apply(traced, _Pipeline(FuseRotary(), FuseAttention(), Attention3d()))
    assert count == 2 and ops.count("Attention") == 2 and "Transpose" not in ops


def test_attention_3d_needs_the_fused_attention(traced):
    count, ops = _apply(traced, _Pipeline(FuseRotary(), Attention3d()))
    assert count == 0 and "Attention" not in ops
