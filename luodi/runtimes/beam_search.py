"""Beam search over the per-sequence cache contract, as transformers' generate(num_beams=...) defines it.

A port of transformers' `_beam_search` (generation/utils.py, v5) for one prompt: each step keeps the top
K = max(2, 1 + number of EOS ids) x num_beams continuations of all beams by accumulated log-probability
(float32, like transformers), continues the best num_beams that did not stop, and adds those of the top
num_beams that did stop (EOS, or max length) to the finished hypotheses with score
sum(log-probabilities) / generated_length ** length_penalty. early_stopping: True stops once num_beams
hypotheses are finished; False stops when the best running beam at its current length cannot beat the worst
finished one (transformers' heuristic); "never" stops only when no running beam could improve, assuming the
longest length when length_penalty > 0. The prompt is prefilled once and its cache forked into num_beams rows;
each step reorders the rows after their parents (SequenceCache.reorder: beam_idx on OpenVINO, slot copies on
ONNX Runtime's GroupQueryAttention buffers).
"""

from dataclasses import dataclass

import numpy as np

from ..errors import GenerationConfigError
from .sequence_cache import SequenceCache

NEG = np.float32(-1.0e9)  # transformers' "never pick" score


@dataclass
class BeamResult:
    """The best finished hypothesis: its new tokens and score (length-penalised sum of log-probabilities)."""

    tokens: list[int]
    score: float
    steps: int


def check_beam_options(num_beams, length_penalty, early_stopping) -> None:
    """One-line errors for beam settings no search can use."""
    if not isinstance(num_beams, int) or isinstance(num_beams, bool) or num_beams < 1:
        raise GenerationConfigError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    if not isinstance(length_penalty, (int, float)) or isinstance(length_penalty, bool) or \
            not np.isfinite(length_penalty):
        raise GenerationConfigError(f"length_penalty must be a finite number, got {length_penalty!r}")
    if early_stopping not in (True, False, "never"):
        raise GenerationConfigError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")


def _log_softmax32(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float32)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first."""
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    return part[np.argsort(-scores[part], kind="stable")]


def beam_search(cache: SequenceCache, prompt: list[int], max_new_tokens: int, num_beams: int, eos_ids: set[int],
                length_penalty: float = 1.0, early_stopping: bool | str = False,
                suppress: list[int] = ()) -> BeamResult:
    """The best of num_beams beams for one prompt (module docstring); `suppress` are token ids never chosen
    (EOS under ignore_eos, which then stops nothing)."""
    eos = sorted(set(eos_ids) - set(suppress))
    keep = max(2, 1 + len(eos)) * num_beams
    row, logits = cache.prefill([prompt], [len(prompt) + max_new_tokens])
    rows = [row[0]] + cache.fork(row[0], num_beams - 1)
    logits = np.repeat(logits, num_beams, axis=0)
    running = [[] for _ in range(num_beams)]
    running_scores = np.full(num_beams, NEG, dtype=np.float32)
    running_scores[0] = 0
    finished = [[] for _ in range(num_beams)]
    finished_scores = np.full(num_beams, NEG, dtype=np.float32)
    is_finished = np.zeros(num_beams, dtype=bool)
    improvable, steps = True, 0
    try:
        while True:
            log_probs = _log_softmax32(logits)
            if suppress:
                log_probs[:, list(suppress)] = -np.inf
            accumulated = (log_probs + running_scores[:, None]).reshape(-1)
            vocab = log_probs.shape[1]
            top = _top(accumulated, keep)
            top_scores, parents, tokens = accumulated[top], top // vocab, top % vocab
            candidates = [running[p] + [int(t)] for p, t in zip(parents, tokens)]
            stops = np.array([int(t) in eos or steps + 1 >= max_new_tokens for t in tokens])
            # the best num_beams continuations that did not stop run on
            live_scores = top_scores + stops.astype(np.float32) * NEG
            nxt = _top(live_scores, num_beams)
            running, running_scores = [candidates[i] for i in nxt], live_scores[nxt]
            new_parents = parents[nxt]
            # stopped ones among the top num_beams join the finished hypotheses if they beat them
            penalised = top_scores / np.float32((steps + 1) ** length_penalty)
            if is_finished.all() and early_stopping is True:
                penalised = penalised + NEG
            if not improvable:
                penalised = penalised + NEG
            just = stops & (np.arange(keep) < num_beams)
            penalised = penalised + (~just).astype(np.float32) * NEG
            merged = np.concatenate([finished_scores, penalised])
            best = _top(merged, num_beams)
            pool = finished + candidates
            finished, finished_scores = [pool[i] for i in best], merged[best]
            is_finished = np.concatenate([is_finished, just])[best]
            steps += 1
            length = max_new_tokens if early_stopping == "never" and length_penalty > 0 else steps
            best_running = running_scores[0] / np.float32(length ** length_penalty)
            worst = np.where(is_finished, finished_scores.min(), NEG)
            improvable = improvable and bool((best_running > worst).any())
            if not improvable or (is_finished.all() and early_stopping is True) or stops.all():
                break
            cache.reorder(rows, [rows[p] for p in new_parents])
            logits = cache.decode(rows, [r[-1] for r in running])
    finally:
        for r in rows:
            cache.release(r)
    return BeamResult(finished[0], float(finished_scores[0]), steps)
