"""The one KV-cache-aware decode loop every backend shares.

Prompts of different lengths are left-padded into one batch; the attention mask hides the padding and
position ids count only real tokens. After the prefill, each step feeds one new token per row and the
backend appends its keys/values to the cache it holds.
"""

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ContextLengthError
from .base import Backend
from .sampling import GenerationConfig, TokenSelector
from .speculative import Speculation


@dataclass
class GenerationStats:
    """Timing of one generate call. TTFT covers the prefill; decode tokens/s excludes it. With speculative
    decoding: drafts proposed and accepted, the target forwards that verified them, and the target forwards
    per new token (1.0 for plain decoding)."""

    prompt_tokens: int
    new_tokens: int = 0
    ttft_s: float = float("nan")
    decode_tokens_per_s: float = float("nan")
    total_s: float = float("nan")
    target_forwards: int = 0
    drafted: int = 0
    accepted: int = 0
    verify_steps: int = 0

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafts / proposed drafts (nan when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def mean_accepted(self) -> float:
        """Drafts accepted per verifying forward (nan when none ran)."""
        return self.accepted / self.verify_steps if self.verify_steps else float("nan")

    @property
    def forwards_per_token(self) -> float:
        """Target forwards per new token, the prefill's included (below 1 when drafts land)."""
        return self.target_forwards / self.new_tokens if self.new_tokens else float("nan")

    def to_dict(self) -> dict:
        """The fields and the derived speculation rates, JSON-ready."""
        return {**asdict(self), "acceptance_rate": self.acceptance_rate, "mean_accepted": self.mean_accepted,
                "forwards_per_token": self.forwards_per_token}


@dataclass
class DecodeLoop:
    """Generates tokens for a batch of prompts; iterate it to run step by step (each step appends one or more
    tokens to `tokens[row]`). With a `speculation`, one prompt at a time is drafted for and verified."""

    backend: Backend
    prompts: list[list[int]]
    config: GenerationConfig
    eos_ids: set[int]
    pad_id: int
    speculation: Speculation | None = None
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
        if self.speculation is not None:
            self.speculation.check(self.backend, len(self.prompts))
        self.budget = min(self.config.max_new_tokens, limit - longest)
        self.tokens = [[] for _ in self.prompts]
        self.finish_reasons = [None] * len(self.prompts)
        self.stats = GenerationStats(prompt_tokens=sum(len(p) for p in self.prompts))
        self.stop_ids = set(self.config.stop_token_ids) | (set() if self.config.ignore_eos else set(self.eos_ids))
        self._stamps: list[float] = []

    def stop(self, row: int, reason: str) -> None:
        """Finish one row early (the caller uses it for stop strings)."""
        if self.finish_reasons[row] is None:
            self.finish_reasons[row] = reason

    @property
    def done(self) -> bool:
        """Every row has finished, or the token budget is spent."""
        return all(r is not None or len(t) >= self.budget for r, t in zip(self.finish_reasons, self.tokens))

    def emit(self, row: int, tokens) -> None:
        """Append a row's new tokens, cut at a stop token or the budget."""
        for token in tokens:
            if self.finish_reasons[row] is not None or len(self.tokens[row]) >= self.budget:
                break
            self.tokens[row].append(int(token))
            if token in self.stop_ids:
                self.finish_reasons[row] = "stop"

    def prefill_inputs(self):
        """The left-padded prompts, their attention mask and position ids (padding excluded from the count)."""
        batch, longest = len(self.prompts), max(len(p) for p in self.prompts)
        ids = np.full((batch, longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((batch, longest), dtype=np.int64)
        for row, prompt in enumerate(self.prompts):
            ids[row, longest - len(prompt):] = prompt
            mask[row, longest - len(prompt):] = 1
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        return ids, mask, positions

    def suppress_eos(self, logits: np.ndarray) -> np.ndarray:
        """With ignore_eos, the EOS logits set to -inf so no EOS is picked (the logits are changed in place)."""
        if self.config.ignore_eos and self.eos_ids:
            logits[..., sorted(self.eos_ids)] = -np.inf
        return logits

    def __iter__(self):
        """Run the generation; each iteration yields after a step has appended tokens."""
        if self.budget == 0:
            self.finish_reasons = ["length"] * len(self.prompts)
            return
        self._t0 = time.perf_counter()
        yield from self._plain() if self.speculation is None else self.speculation.run(self)
        self.finish_reasons = [r or "length" for r in self.finish_reasons]

    def _plain(self):
        select = TokenSelector(self.config)
        seen = [np.asarray(p, dtype=np.int64) for p in self.prompts]
        ids, mask, positions = self.prefill_inputs()
        state = self.backend.new_state(len(self.prompts), capacity=ids.shape[1] + self.budget)
        logits = self.target_forward(state, ids, mask, positions)[:, -1, :]
        while True:
            done = np.array([r is not None for r in self.finish_reasons])
            nxt = np.where(done, self.pad_id, select(self.suppress_eos(logits), seen)).astype(np.int64)
            for row in np.flatnonzero(~done):
                self.emit(row, [nxt[row]])
                if self.config.repetition_penalty != 1.0:
                    seen[row] = np.append(seen[row], nxt[row])
            self.record()
            yield nxt
            if self.done:
                break
            mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=np.int64)], axis=1)
            positions = positions[:, -1:] + 1
            logits = self.target_forward(state, nxt[:, None], mask, positions)[:, -1, :]

    def target_forward(self, state, ids, mask, positions) -> np.ndarray:
        """One forward of the model being decoded (counted in the stats); the last positions' logits."""
        self.stats.target_forwards += 1
        return self.backend.forward_window(state, ids, mask, positions)

    def record(self) -> None:
        """Stamp the tokens appended since the last call and update the timing stats."""
        now = time.perf_counter()
        s = self.stats
        self._stamps += [now] * (max(len(t) for t in self.tokens) - len(self._stamps))
        s.new_tokens = len(self._stamps)
        if not self._stamps:
            return
        s.ttft_s = self._stamps[0] - self._t0
        s.total_s = self._stamps[-1] - self._t0
        if self._stamps[-1] > self._stamps[0]:
            s.decode_tokens_per_s = (len(self._stamps) - 1) / (self._stamps[-1] - self._stamps[0])
