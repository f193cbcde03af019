"""The ONNX Runtime backend's KV-cache strategies (runtimes/ort_cache.py) on tiny-llama: one export per layout
(ort's default passes: shared_buffer; without inplace_kv_cache: concat; the trt target's graph under ONNX
Runtime: scatter_buffer) gives the same greedy ids, a rollback after a multi-token step is as if it never ran,
and a layout ONNX Runtime cannot run is refused in one line."""

import numpy as np
import pytest

import luodi
from luodi.contract.kv import KV_LAYOUTS
from luodi.errors import CorruptModelError
from luodi.runtimes.ort_cache import (STRATEGIES, ConcatCache, ScatterBufferCache, SharedBufferCache,
                                      strategy_for)

LAYOUTS = {"concat": ConcatCache, "shared_buffer": SharedBufferCache, "scatter_buffer": ScatterBufferCache}
PROMPTS = ["one two three four one two", "The capital of France is a city whose long history"]


@pytest.fixture(scope="module")
def models(export_dir, tmp_path_factory):
    """kv_cache name -> the tiny-llama LanguageModel on ONNX Runtime with that layout."""
    from luodi.exporters import export_model

    concat = export_model("tiny-llama", out=tmp_path_factory.mktemp("concat") / "tiny-llama",
                          passes="-inplace_kv_cache", progress=False)
    lms = {"shared_buffer": luodi.load(export_dir("tiny-llama")), "concat": luodi.load(concat),
           "scatter_buffer": luodi.load(export_dir("tiny-llama", "trt"), backend="ort")}
    for name, lm in lms.items():
        assert lm.backend.kv_cache == name and type(lm.backend.kv) is LAYOUTS[name]
    return lms


def test_every_layout_gives_the_same_greedy_ids(models):
    """One prompt at a time, and a left-padded batch (shared_buffer: its prefill runs row by row)."""
    ids = {name: [lm.generate(p, max_new_tokens=20).token_ids for p in PROMPTS] for name, lm in models.items()}
    batched = {name: [r.token_ids for r in lm.generate(PROMPTS, max_new_tokens=20)] for name, lm in models.items()}
    assert ids["concat"] == ids["shared_buffer"] == ids["scatter_buffer"]
    assert all(b == ids["concat"] for b in batched.values())


def _step(backend, state, tokens: list[int]) -> np.ndarray:
    """One step of `tokens` after the state's past; every position's logits [n, vocab]."""
    past = state.past_length
    return backend.forward_window(state, np.array([tokens]), np.ones((1, past + len(tokens))),
                                  np.arange(past, past + len(tokens))[None])[0]


def _after(backend, *steps: list[int]):
    """A new one-sequence state after these steps."""
    state = backend.new_state(1, 24)
    for tokens in steps:
        _step(backend, state, tokens)
    return state


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_rollback_after_a_multi_token_step_is_as_if_it_never_ran(layout, models):
    """Prompt, a 5-token verifying step, rollback to the prompt, one more step: the logits of never having
    taken the verifying step; a rollback into the step keeps exactly its first positions."""
    backend = models[layout].backend
    prompt, drafts, nxt = [3, 14, 15, 92, 65, 35], [89, 79, 32, 38, 46], [26, 43]
    rolled = _after(backend, prompt, drafts)
    backend.rollback(rolled, len(prompt))
    never = _after(backend, prompt)
    np.testing.assert_allclose(_step(backend, rolled, nxt), _step(backend, never, nxt), atol=1e-5)
    partial = _after(backend, prompt, drafts)
    backend.rollback(partial, len(prompt) + 2)
    np.testing.assert_allclose(_step(backend, partial, nxt), _step(backend, _after(backend, prompt, drafts[:2]), nxt),
                               atol=1e-5)


def test_only_shared_buffers_are_shared(models):
    """A draft model steps on its target's cache only when both have the shared in-place buffers; its view is
    the same buffers, bound to its own session on its first step."""
    shared, concat, scatter = (models[name].backend for name in ("shared_buffer", "concat", "scatter_buffer"))
    assert shared.shares_cache_with(shared)
    assert not any(a.shares_cache_with(b) for a in (shared, concat, scatter) for b in (concat, scatter))
    assert not concat.shares_cache_with(shared) and not scatter.shares_cache_with(shared)
    state = _after(shared, [1, 2, 3])
    view = shared.view_state(state)
    assert view.past_length == 3 and view.cache.binding is None and state.cache.binding is not None
    assert all(a is b for a, b in zip(view.cache.arrays, state.cache.arrays))


def test_the_strategy_is_looked_up_by_layout():
    assert {layout.name: cls for layout, cls in STRATEGIES.items()} == LAYOUTS
    assert all(strategy_for(name) is cls and cls.layout is KV_LAYOUTS[name] for name, cls in LAYOUTS.items())
    for name in ("mystery", "stateful", None):  # stateful: the cache is OpenVINO's state, not graph tensors
        with pytest.raises(CorruptModelError, match="cannot run the KV cache layout") as error:
            strategy_for(name)
        assert "\n" not in str(error.value)
