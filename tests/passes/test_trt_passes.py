"""The trt target's passes: rms_normalization (standard RMSNormalization) and kv_cache_scatter (the KV
concat -> TensorScatter into a fixed max-context buffer) keep the numbers and leave alone what they must."""

import numpy as np
import onnx_ir as ir

from luodi.passes.kv_cache_scatter import MAX_CONTEXT_KEY, KvCacheScatter
from luodi.passes.rms_normalization import RmsNormalization

from .graphs import apply_and_compare, run, traced_feeds
from .test_norm_passes import X, _rms

CAPACITY = 12


def test_rms_normalization_emits_the_standard_op():
    count, ops = apply_and_compare(RmsNormalization(), _rms, {"x": X})
    assert count == 1 and ops == ["RMSNormalization"]
    assert apply_and_compare(RmsNormalization(), lambda: _rms(axes=(1,)), {"x": X})[0] == 0


def _scattered(traced, capacity=CAPACITY):
    m = ir.load(traced)
    m.metadata_props[MAX_CONTEXT_KEY] = str(capacity)
    graph_pass = KvCacheScatter()
    graph_pass(m)
    return m, graph_pass.count


def _in_buffers(feeds, capacity=CAPACITY):
    """The same feeds with each past moved into the first slots of a zeroed [b, kv, capacity, d] buffer."""
    out = dict(feeds)
    for name, past in feeds.items():
        if name.startswith("past_key_values"):
            buffer = np.zeros((*past.shape[:2], capacity, past.shape[3]), np.float32)
            buffer[:, :, : past.shape[2]] = past
            out[name] = buffer
    return out


def test_scatter_matches_concat_for_prompts_steps_and_padding(traced):
    m, count = _scattered(traced)
    assert count == 2
    ops = [n.op_type for n in m.graph]
    assert ops.count("TensorScatter") == 4 and "Concat" not in [n.op_type for n in m.graph
                                                                if n.outputs[0].is_graph_output()]
    assert all(v.shape[2] == CAPACITY for v in m.graph.inputs if v.name.startswith("past_key_values"))
    reference = ir.load(traced)
    for feeds in (traced_feeds(batch=2, seq=5, past=0), traced_feeds(batch=2, seq=1, past=3),
                  traced_feeds(batch=2, seq=4, past=3)):  # prompt, decode step, a chunk over a past; row 1 padded
        want = run(reference, feeds)
        got = run(m, _in_buffers(feeds))
        np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=1e-5)
        total = feeds["attention_mask"].shape[1]
        for present_got, present_want in zip(got[1:], want[1:]):  # the concat's content, then untouched zeros
            np.testing.assert_allclose(present_got[:, :, :total], present_want, atol=1e-6)
            assert not present_got[:, :, total:].any()


def test_scatter_needs_the_max_context_and_graph_level_caches(traced):
    m = ir.load(traced)
    assert m.metadata_props.pop(MAX_CONTEXT_KEY)  # the export records it; without it nothing sizes a buffer
    graph_pass = KvCacheScatter()
    graph_pass(m)
    assert graph_pass.count == 0
    m, _ = _scattered(traced)
    again = KvCacheScatter()
    again(m)  # already scattered: no KV concat left to rewrite
    assert again.count == 0
