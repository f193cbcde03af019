"""Token selection: greedy, top-k/top-p filtering, repetition penalty, and which settings mean sampling."""

import numpy as np

from luodi.runtimes.sampling import GenerationConfig, TokenSelector, _filter_top_k_top_p, apply_repetition_penalty


def test_top_k_and_top_p_filters():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isfinite(_filter_top_k_top_p(logits, 2, 1.0)).tolist() == [[True, True, False, False]]
    assert np.isfinite(_filter_top_k_top_p(logits, 0, 0.7)).tolist() == [[True, True, False, False]]
    assert np.isfinite(_filter_top_k_top_p(logits, 0, 0.1)).tolist() == [[True, False, False, False]]


def test_repetition_penalty_lowers_seen_tokens():
    logits = np.array([[2.0, -1.0, 3.0]])
    out = apply_repetition_penalty(logits, [np.array([0, 1])], 2.0)
    assert out.tolist() == [[1.0, -2.0, 3.0]]


def test_sampling_follows_the_distribution():
    probs = np.array([0.6, 0.3, 0.1])
    select = TokenSelector(GenerationConfig(do_sample=True, seed=0))
    draws = [int(select(np.log(probs)[None], [np.array([], dtype=np.int64)])[0]) for _ in range(3000)]
    freq = np.bincount(draws, minlength=3) / len(draws)
    assert np.abs(freq - probs).max() < 0.04


def test_what_counts_as_sampling():
    assert not GenerationConfig().sampling
    assert not GenerationConfig(temperature=0.0, top_k=5).sampling
    assert GenerationConfig(temperature=0.7).sampling and GenerationConfig(top_p=0.9).sampling
    assert not GenerationConfig(do_sample=False, temperature=0.7).sampling
