"""Drafters for speculative decoding: prompt lookup (no model) and a draft model (any luodi export, or the INT4
export of the target itself). A drafter's `look` offers free drafts (prompt lookup's; none from a model alone)
and `propose` has a model draft up to k tokens after a context; `cost` is one model draft token's cost relative
to one step of the target (0: no model), which the adaptive draft length weighs against the acceptance rate."""

import time

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import LuodiError
from .speculative import Draft

LONG_MATCH = 3  # matched n-grams of this length or longer are one kind of draft


class PromptLookup:
    """Drafts by n-gram lookup: the longest suffix of the text so far (max_ngram tokens, down to min_ngram)
    that occurred earlier in the prompt or the output proposes the tokens that followed one of its occurrences:
    the first at or after where the previous draft was copied from, as text quoting a source reads it forward
    (a list's items, a passage's dates), else the latest. Replayed over SmolLM2's greedy outputs
    (a one-off replay, docs/SPECULATIVE.md) that choice modelled a 2% higher mean speed-up than always the latest on the
    grounded prompts and 6% on ten others, the open-ended ones unchanged.
    Costs almost nothing, and pays off where the output quotes its input (extract, edit, summarise, code). A
    draft's kind is the matched length, capped at LONG_MATCH: on SmolLM2's grounded prompts 35% of the drafts
    after a one-token match had a first token right, 75% after two, 91% after five. With `classes` (token id ->
    class id, Tokenizer.word_classes), tokens of one class match: a word with and without its leading space,
    as where an answer's first line quotes the middle of a prompt's."""

    cost = 0.0

    def __init__(self, max_ngram: int = 5, min_ngram: int = 1, classes: np.ndarray | None = None):
        if not 1 <= min_ngram <= max_ngram:
            raise LuodiError(f"prompt lookup needs 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.max_ngram, self.min_ngram, self.classes = max_ngram, min_ngram, classes
        self.anchor = None  # where the previous draft was copied from

    def check(self, target) -> None:
        """Prompt lookup works with any target."""

    def start(self, capacity: int, target_state) -> None:
        """A generation copies from no place yet."""
        self.anchor = None

    def look(self, context: list[int], k: int) -> Draft:
        """Up to k tokens continuing an earlier occurrence of the context's longest matching suffix."""
        tokens = np.asarray(context)
        match = self._longest_match(tokens)
        if match is None:
            return Draft([])
        n, starts = match
        ahead = starts[starts + n > self.anchor] if self.anchor is not None else starts[:0]
        follow = (ahead[0] if ahead.size else starts[-1]) + n
        self.anchor = follow
        return Draft(tokens[follow:follow + k].tolist(), kind=min(n, LONG_MATCH))

    def _longest_match(self, tokens: np.ndarray) -> tuple[int, np.ndarray] | None:
        """(n, where they occurred before) for the longest n whose last n tokens of the text did occur earlier,
        or None: the occurrences a draft may continue."""
        keys = tokens if self.classes is None else self._classes_of(tokens)
        for n in range(self.max_ngram, self.min_ngram - 1, -1):
            if len(tokens) <= n:
                continue
            starts = np.flatnonzero((sliding_window_view(keys[:-1], n) == keys[-n:]).all(axis=1))
            if starts.size:
                return n, starts
        return None

    def _classes_of(self, tokens: np.ndarray) -> np.ndarray:
        """Each token's class; ids beyond the tokenizer's vocabulary (a model's padding rows) are their own."""
        known = tokens < len(self.classes)
        return np.where(known, self.classes[np.where(known, tokens, 0)], tokens)


class ModelDrafter:
    """Drafts with another export of a model sharing the target's tokenizer: k plain steps on its own backend.

    Where the draft's backend can step over the target's KV cache (two ONNX Runtime exports of one checkpoint
    with in-place buffers: the INT4 export drafting for the fp32 one), it does: each proposal starts at the
    target's cached length, attends over the target's own keys and values, and writes its drafts' positions,
    which the target's verifying step then overwrites. No second cache, no prefill of the prompt and no catching
    up after a step (measured on SmolLM2: the draft's prompt prefill alone was 5% of an open-ended generation's
    decode time). Otherwise the draft keeps its own cache, rolled back to the tokens the target kept before the
    next proposal. Sampled drafts are drawn from the draft model's distribution under the same sampling
    settings, and that distribution is kept for the acceptance test. With `lookup`, a prompt-lookup match is
    drafted instead, for free, when its kind's acceptance is expected to pay more than the model's drafts (the
    decode loop decides)."""

    def __init__(self, backend, cost: float, lookup: PromptLookup | None = None):
        self.backend, self.cost, self.lookup = backend, cost, lookup
        self.state, self.shares_cache = None, False
        self.fed = []  # the tokens in a cache of the draft's own

    def look(self, context: list[int], k: int) -> Draft:
        """A free prompt-lookup draft, when lookup is on."""
        return self.lookup.look(context, k) if self.lookup else Draft([])

    def check(self, target) -> None:
        """The draft must cover the target's context and vocabulary."""
        if self.backend.max_context != target.max_context:
            raise LuodiError(f"the draft model's max context is {self.backend.max_context}; the target's is "
                             f"{target.max_context}: export the draft with the same max context")
        if self.backend.vocab_size != target.vocab_size:
            raise LuodiError(f"the draft model's vocabulary has {self.backend.vocab_size} entries; the target's has "
                             f"{target.vocab_size}")
        # the target's keys and values stand in for the draft's own only when both come from one checkpoint
        self.shares_cache = (self.backend.source is not None and self.backend.source == target.source
                             and self.backend.shares_cache_with(target))

    def start(self, capacity: int, target_state) -> None:
        """The generation's cache: a view of the target's, or a fresh one of the draft's own."""
        self.fed = []
        if self.lookup:
            self.lookup.start(capacity, target_state)
        self.state = (self.backend.view_state(target_state) if self.shares_cache
                      else self.backend.new_state(1, capacity))

    def propose(self, context: list[int], k: int, select) -> Draft:
        """k tokens from the draft model after the context (whose last token is the target's pending one, not yet
        in its cache), feeding it only what its cache does not hold."""
        if self.shares_cache:
            keep = len(context) - 1
            self.state.past_length = keep
        else:
            keep = min(_common_prefix(self.fed, context), len(context) - 1)
            self.backend.rollback(self.state, keep)
            del self.fed[keep:]
        config = select.config
        feed, tokens, probs = context[keep:], [], []
        steady, seconds = 0, 0.0  # one-token forwards and their time: the per-token cost, without the catch-up
        for _ in range(k):
            past = self.state.past_length
            started = time.perf_counter()
            logits = self.backend.forward(self.state, np.array([feed]), np.ones((1, past + len(feed))),
                                          np.arange(past, past + len(feed))[None])
            if len(feed) == 1:
                steady, seconds = steady + 1, seconds + time.perf_counter() - started
            if not self.shares_cache:
                self.fed += feed
            seen = select.seen(context + tokens)
            if config.sampling:
                probs.append(select.probabilities(logits, seen)[0])
                tokens.append(select.draw(probs[-1]))
            else:
                tokens.append(int(select(logits, seen)[0]))
            feed = tokens[-1:]
        return Draft(tokens, np.stack(probs) if probs else None, (steady, seconds))


def _common_prefix(a: list[int], b: list[int]) -> int:
    """The length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n
