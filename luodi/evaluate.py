"""`luodi eval`: quality of an export measured through its own runtime.

Perplexity over a text the user passes, in disjoint windows of `window` tokens, fed one token per step
through the same decode path generation uses. Each window starts with an empty KV cache and, when the
tokenizer opens a text with special tokens (a BOS), with those, as the model saw its training text start
(Gemma 3 270M scores 26 instead of 16 on GPL-3 in 512-token windows that lack it); every text token a window
holds is scored, but its first when it has no opening. Against a reference export (e.g. the fp32 one) on
the same windows: top-1 agreement (how often both predict the same next token, teacher-forced on the text)
and, on prompts, the length of the identical greedy prefix.
"""

import math
import time
from pathlib import Path

import numpy as np

from .errors import LuodiError
from .inputs import read_text_file


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def text_ids(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """The text's token ids without special tokens, and the special tokens the tokenizer opens a text with
    (a BOS, if it adds one; nothing when it also appends tokens, as no window ends the text)."""
    plain, full = tokenizer.encode(text, add_special_tokens=False), tokenizer.encode(text)
    opening = full[:len(full) - len(plain)]
    return plain, opening if full[len(opening):] == plain else []


def text_windows(ids: list[int], window: int, max_tokens: int | None, opening: list[int]) -> list[list[int]]:
    """A text's ids (the first `max_tokens`) cut into windows of at most `window` tokens, each led by `opening`
    (text_ids), as evaluation and calibration both read a text."""
    ids = ids[:max_tokens] if max_tokens else ids
    step = window - len(opening)
    if step < 1:
        raise LuodiError(f"a window of {window} tokens leaves no room for text after the {len(opening)} opening "
                         "special tokens")
    return [opening + ids[i:i + step] for i in range(0, len(ids), step) if len(opening) + len(ids[i:i + step]) > 1]


def _step_logits(backend, window: list[int]):
    """Yield the next-token logits after each prefix of `window` (one token per step)."""
    state = backend.new_state(1, capacity=len(window))
    for i, token in enumerate(window[:-1]):
        yield backend.forward(state, np.array([[token]], np.int64), np.ones((1, i + 1), np.int64),
                              np.array([[i]], np.int64))[0]


def evaluate_text(lm, ids: list[int], window: int = 512, max_tokens: int | None = 2048, reference=None,
                  opening: list[int] = ()) -> dict:
    """Perplexity of `lm` on a text's token ids (`max_tokens` of them), each window led by `opening` (see
    text_ids); with a `reference` model also top-1 agreement on the same positions."""
    window = min(window, lm.backend.max_context)
    windows = text_windows(ids, window, max_tokens, list(opening))
    if not windows:
        raise LuodiError("the evaluation text has fewer than two tokens")
    first = max(len(opening), 1)  # the first position scored: the first text token when an opening leads
    nll, scored, agree, start = 0.0, 0, 0, time.perf_counter()
    for win in windows:
        ref_steps = _step_logits(reference.backend, win) if reference else None
        for i, logits in enumerate(_step_logits(lm.backend, win)):
            ref_logits = next(ref_steps) if ref_steps is not None else None
            if i + 1 < first:
                continue
            nll -= _log_softmax(logits)[win[i + 1]]
            scored += 1
            if ref_logits is not None:
                agree += int(np.argmax(logits) == np.argmax(ref_logits))
    report = {"perplexity": math.exp(nll / scored), "tokens_scored": scored, "windows": len(windows),
              "window": window, "seconds": round(time.perf_counter() - start, 1)}
    if reference is not None:
        report["top1_agreement"] = agree / scored
    return report


def greedy_prefix(lm, reference, prompts: list[str], max_new_tokens: int = 64) -> dict:
    """Per prompt, how many leading greedy tokens `lm` and `reference` have in common."""
    lengths = []
    for prompt in prompts:
        got = lm.generate(prompt, max_new_tokens=max_new_tokens).token_ids
        want = reference.generate(prompt, max_new_tokens=max_new_tokens).token_ids
        same = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        lengths.append(same)
    return {"identical_greedy_prefix": lengths, "mean_identical_prefix": float(np.mean(lengths)),
            "max_new_tokens": max_new_tokens}


def read_text(path: Path) -> str:
    """The evaluation or calibration text (UTF-8), or a one-line error when it is unreadable or empty."""
    text = read_text_file(path)
    if not text.strip():
        raise LuodiError(f"text file {path} is empty")
    return text
