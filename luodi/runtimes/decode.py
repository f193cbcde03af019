"""The one KV-cache-aware decode loop every backend shares.

Prompts of different lengths are left-padded into one batch; the attention mask hides the padding and
position ids count only real tokens. After the prefill, each step feeds one new token per row and the
backend appends its keys/values to the cache it holds.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import ContextLengthError
from .base import Backend
from .sampling import GenerationConfig, TokenSelector


@dataclass
class GenerationStats:
    """Timing of one generate call. TTFT covers the prefill; decode tokens/s excludes it."""

    prompt_tokens: int
    new_tokens: int = 0
    ttft_s: float = float("nan")
    decode_tokens_per_s: float = float("nan")
    total_s: float = float("nan")


@dataclass
class DecodeLoop:
    """Generates tokens for a batch of prompts; iterate it for each step's tokens (one per row)."""

    backend: Backend
    prompts: list[list[int]]
    config: GenerationConfig
    eos_ids: set[int]
    pad_id: int
    tokens: list[list[int]] = field(init=False)
    finish_reasons: list[str | None] = field(init=False)
    stats: GenerationStats = field(init=False)

    def __post_init__(self):
        self.config.validate()
        if not self.prompts or any(len(p) == 0 for p in self.prompts):
            raise ContextLengthError("every prompt needs at least one token")
        if self.backend.max_batch is not None and len(self.prompts) > self.backend.max_batch:
            raise ContextLengthError(f"{len(self.prompts)} prompts in one batch; this model takes at most "
                                     f"{self.backend.max_batch} (its engine's profiles)")
        longest = max(len(p) for p in self.prompts)
        limit = self.backend.max_context
        if longest >= limit:
            raise ContextLengthError(f"prompt has {longest} tokens; the model's max context is {limit} "
                                     "(it must leave room for at least one new token)")
        self.budget = min(self.config.max_new_tokens, limit - longest)
        self.tokens = [[] for _ in self.prompts]
        self.finish_reasons = [None] * len(self.prompts)
        self.stats = GenerationStats(prompt_tokens=sum(len(p) for p in self.prompts))
        self._stop_ids = np.array(sorted(set(self.config.stop_token_ids) | (
            set() if self.config.ignore_eos else set(self.eos_ids))), dtype=np.int64)

    def stop(self, row: int, reason: str) -> None:
        """Finish one row early (the caller uses it for stop strings)."""
        if self.finish_reasons[row] is None:
            self.finish_reasons[row] = reason

    def _prefill_inputs(self):
        batch, longest = len(self.prompts), max(len(p) for p in self.prompts)
        ids = np.full((batch, longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((batch, longest), dtype=np.int64)
        for row, prompt in enumerate(self.prompts):
            ids[row, longest - len(prompt):] = prompt
            mask[row, longest - len(prompt):] = 1
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        return ids, mask, positions

    def __iter__(self):
        """Yield each step's tokens [batch]; rows already finished get the pad id."""
        if self.budget == 0:
            self.finish_reasons = ["length"] * len(self.prompts)
            return
        select = TokenSelector(self.config)
        seen = [np.asarray(p, dtype=np.int64) for p in self.prompts]
        ids, mask, positions = self._prefill_inputs()
        state = self.backend.new_state(len(self.prompts), capacity=ids.shape[1] + self.budget)
        t0 = time.perf_counter()
        logits = self.backend.forward(state, ids, mask, positions)
        stamps = []
        for step in range(self.budget):
            if self.config.ignore_eos and self.eos_ids:
                logits[:, sorted(self.eos_ids)] = -np.inf
            done = np.array([r is not None for r in self.finish_reasons])
            nxt = np.where(done, self.pad_id, select(logits, seen)).astype(np.int64)
            stamps.append(time.perf_counter())
            for row in np.flatnonzero(~done):
                token = int(nxt[row])
                self.tokens[row].append(token)
                if self.config.repetition_penalty != 1.0:
                    seen[row] = np.append(seen[row], token)
                if token in self._stop_ids:
                    self.finish_reasons[row] = "stop"
            self._record(t0, stamps)
            yield nxt
            if all(r is not None for r in self.finish_reasons) or step == self.budget - 1:
                break
            mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=np.int64)], axis=1)
            positions = positions[:, -1:] + 1
            logits = self.backend.forward(state, nxt[:, None], mask, positions)
        self.finish_reasons = [r or "length" for r in self.finish_reasons]

    def _record(self, t0: float, stamps: list[float]) -> None:
        s = self.stats
        s.new_tokens = len(stamps)
        s.ttft_s = stamps[0] - t0
        s.total_s = stamps[-1] - t0
        if len(stamps) > 1:
            s.decode_tokens_per_s = (len(stamps) - 1) / (stamps[-1] - stamps[0])
