"""fuse_rotary and fuse_attention on a traced (cleanup-only) tiny Llama: they match every layer, keep the
logits, and leave alone graphs whose constants say it is not the operation they fuse."""

import numpy as np
import onnx_ir as ir

from luodi.passes import run_passes
from luodi.passes.attention_3d import Attention3d
from luodi.passes.fuse_attention import FuseAttention
from luodi.passes.fuse_rotary import FuseRotary

from .graphs import Pipeline, apply_to_traced


def test_rotary_fuses_q_and_k_of_every_layer(traced):
    count, ops = apply_to_traced(traced, FuseRotary())
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
    count, ops = apply_to_traced(traced, FuseRotary(), mutate=_second_half_twice)
    assert count == 0 and "RotaryEmbedding" not in ops


def test_attention_fuses_every_layer_with_the_cache(traced):
    count, ops = apply_to_traced(traced, FuseAttention())
    assert count == 2 and ops.count("Attention") == 2 and "Softmax" not in ops


def _soft_mask(model):
    """Masked scores set to -10 instead of the dtype minimum: not the masking the fused op reproduces."""
    for node in list(model.graph):
        if node.op_type == "Where" and (_const(node.inputs[2]) or 0) < -1e30:
            _set_input(model, node, 2, np.array(-10.0, dtype=np.float32))


def test_attention_leaves_other_masking_alone(traced):
    count, ops = apply_to_traced(traced, FuseAttention(), mutate=_soft_mask)
    assert count == 0 and "Softmax" in ops


def test_full_pipeline_after_attention_and_rotary(traced):
    model = ir.load(traced)
    counts = run_passes(model, ["fuse_rms_norm", "fuse_skip_norm", "fuse_rotary", "fuse_attention", "pack_matmuls"]).counts
    assert counts == {"fuse_rms_norm": 5, "fuse_skip_norm": 4, "fuse_rotary": 4, "fuse_attention": 2,
                      "pack_matmuls": 4}


def test_attention_3d_drops_the_head_reshapes(traced):
    count, ops = apply_to_traced(traced, Pipeline(FuseRotary(), FuseAttention(), Attention3d()))
    assert count == 2 and ops.count("Attention") == 2 and "Transpose" not in ops


def test_attention_3d_needs_the_fused_attention(traced):
    count, ops = apply_to_traced(traced, Pipeline(FuseRotary(), Attention3d()))
    assert count == 0 and "Attention" not in ops
