"""inplace_kv_cache on the traced tiny Llama: GroupQueryAttention in every layer, the same outputs for
prompts, decode steps and a prompt over a past, the same logits over a longer shared buffer, and no match
where the attention is not what the op computes."""

import numpy as np
import onnx_ir as ir

from luodi.passes.attention_3d import Attention3d
from luodi.passes.fuse_attention import FuseAttention
from luodi.passes.fuse_rotary import FuseRotary
from luodi.passes.inplace_kv_cache import InplaceKvCache, _derives_from
from luodi.passes.pack_matmuls import PackMatMuls

from .graphs import Pipeline, apply_to_traced, run, traced_feeds

# the shapes GroupQueryAttention takes: a prompt, a decode step, a prompt over a past (one sequence)
FEEDS = [traced_feeds(batch=2, seq=5, past=0, padded=False), traced_feeds(batch=2, seq=1, past=3, padded=False),
         traced_feeds(batch=1, seq=4, past=3, padded=False)]


def _pipeline():
    return Pipeline(FuseRotary(), FuseAttention(), Attention3d(), PackMatMuls(), InplaceKvCache())


def test_every_layer_becomes_group_query_attention(traced):
    count, ops = apply_to_traced(traced, _pipeline(), feeds=FEEDS)
    assert count == 2 and ops.count("GroupQueryAttention") == 2
    assert not {"Attention", "RotaryEmbedding"} & set(ops)  # rotary inside
    assert ops.count("Split") == 2  # gate/up's; the packed Q/K/V projection feeds the op whole


def test_shared_buffer_longer_than_the_sequence(traced):
    """A past buffer with free slots (the in-place layout): same logits, new keys written after the past."""
    before, after = ir.load(traced), ir.load(traced)
    _pipeline()(after)
    feeds = traced_feeds(batch=2, seq=1, past=3, padded=False)
    want = run(before, feeds)
    shared = dict(feeds)
    for name in [n for n in feeds if n.startswith("past_key_values")]:
        shared[name] = np.concatenate([feeds[name], np.zeros((2, 2, 6, 16), np.float32)], axis=2)
    got = run(after, shared)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=1e-5)
    for present, expected in zip(got[1:], want[1:]):
        assert present.shape == (2, 2, 9, 16)
        np.testing.assert_allclose(present[:, :, :4], expected, atol=1e-5, rtol=1e-5)
        assert not present[:, :, 4:].any()


def _causal_only(model):
    """Attention masked only causally, not by the attention mask: padding would no longer be hidden."""
    mask = next(v for v in model.graph.inputs if v.name == "attention_mask")
    for node in list(model.graph):
        if node.op_type == "And":
            causal = next(v for v in node.inputs if not _derives_from(v, mask))
            ir.convenience.replace_all_uses_with(node.outputs[0], causal)


def test_attention_not_masked_by_attention_mask_is_left_alone(traced):
    mutate = Pipeline(FuseRotary(), FuseAttention(), Attention3d(), _causal_only)
    count, ops = apply_to_traced(traced, InplaceKvCache(), mutate=mutate, feeds=FEEDS)
    assert count == 0 and ops.count("Attention") == 2


def _interleaved(model):
    """Interleaved rotary (pairs of adjacent channels): not what the tables and the rotate-half form say."""
    for node in list(model.graph):
        if node.op_type == "RotaryEmbedding":
            node.attributes["interleaved"] = ir.AttrInt64("interleaved", 1)


def test_rotary_it_does_not_reproduce_stays_outside(traced):
    mutate = Pipeline(FuseRotary(), FuseAttention(), Attention3d(), _interleaved)
    count, ops = apply_to_traced(traced, InplaceKvCache(), mutate=mutate, feeds=FEEDS)
    assert count == 2 and ops.count("RotaryEmbedding") == 4 and ops.count("GroupQueryAttention") == 2
