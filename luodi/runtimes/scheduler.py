"""Continuous batching: sequences join and leave between steps, each at its own length, over one SequenceCache.

submit() queues a request (one prompt, its GenerationConfig, n samples); step() admits waiting requests while
the pool has rows and KV budget for their worst case (prompt + new tokens), prefills the admitted prompts (each
once: n samples of one prompt fork its cache into n rows), picks every admitted sequence's first token, then
runs one batched decode step over every running sequence and picks their next tokens. A sequence that stops
(EOS, a stop id, its budget, finish() for a stop string or a cancellation) releases its row at once, and the
next request takes it. Nothing here knows the backend: runtimes/sequence_cache.py is the contract, the pool
behind it (slots, padded rows, or a recurrent state) the implementation.

Each sequence keeps the log-probability of every token it chose under the model's distribution (raw logits,
before temperature or filtering) and, with `logprobs=k`, the k most likely alternatives at each step.
"""

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..errors import ContextLengthError
from .sampling import GenerationConfig, TokenSelector
from .sequence_cache import SequenceCache, cache_for


@dataclass
class Sequence:
    """One sequence the scheduler runs: its prompt and settings, the tokens so far and their log-probabilities."""

    prompt: list[int]
    config: GenerationConfig
    budget: int
    selector: TokenSelector
    top_k_logprobs: int = 0
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: str | None = None
    row: int | None = None
    arrived: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    last_token_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def ttft_s(self) -> float:
        """Seconds from submission to the first token (queueing and prefill included)."""
        return self.first_token_at - self.arrived if self.first_token_at else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first per second of decoding."""
        span = (self.last_token_at or 0) - (self.first_token_at or 0)
        return (len(self.tokens) - 1) / span if span > 0 else float("nan")

    @property
    def mean_logprob(self) -> float:
        """The mean log-probability of the chosen tokens (best_of's default score)."""
        return float(np.mean(self.logprobs)) if self.logprobs else float("-inf")


class Scheduler:
    """Runs many independent sequences at once on one backend (module docstring). `max_rows` sequences at most;
    `kv_positions`, if set, caps the KV positions all admitted sequences may reach together."""

    def __init__(self, backend, eos_ids, pad_id: int, max_rows: int = 8, kv_positions: int | None = None,
                 cache: SequenceCache | None = None):
        self.backend, self.eos_ids = backend, set(eos_ids)
        self.cache = cache or cache_for(backend, pad_id, max_rows, kv_positions)
        self.waiting: deque[list[Sequence]] = deque()
        self.running: list[Sequence] = []
        self.steps = 0

    def submit(self, prompt: list[int], config: GenerationConfig, n: int = 1, logprobs: int = 0) -> list[Sequence]:
        """Queue `n` samples of one prompt (its prefill runs once); the sequences, which fill as steps run."""
        config.validate()
        if not prompt:
            raise ContextLengthError("every prompt needs at least one token")
        limit = self.backend.max_context
        if len(prompt) >= limit:
            raise ContextLengthError(f"prompt has {len(prompt)} tokens; the model's max context is {limit} "
                                     "(it must leave room for at least one new token)")
        budget = min(config.max_new_tokens, limit - len(prompt))
        self.cache.check_fits([len(prompt) + budget] * n)
        sequences = [Sequence(list(prompt), config, budget, self._selector(config, i), logprobs) for i in range(n)]
        if budget == 0:
            for seq in sequences:
                seq.finish_reason = "length"
        else:
            self.waiting.append(sequences)
        return sequences

    @staticmethod
    def _selector(config: GenerationConfig, index: int) -> TokenSelector:
        """Sample 0 draws from the config's seed (as a lone generation does), sample i from its own stream."""
        selector = TokenSelector(config)
        if index and config.seed is not None:
            selector.rng = np.random.default_rng([config.seed, index])
        return selector

    @property
    def busy(self) -> bool:
        """Whether any sequence is waiting or running."""
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Stop a sequence (a stop string, a cancelled request): its row goes back to the pool at once."""
        if seq.finish_reason is None:
            seq.finish_reason = reason
        if seq.row is not None:
            self.cache.release(seq.row)
            seq.row = None
        if seq in self.running:
            self.running.remove(seq)
        for group in self.waiting:
            if seq in group:
                group.remove(seq)
        while self.waiting and not self.waiting[0]:
            self.waiting.popleft()

    def step(self) -> list[Sequence]:
        """Admit what fits, prefill it, then one decode step over every running sequence; the sequences that got
        tokens."""
        advanced = self._admit()
        active = [s for s in self.running if not s.finished]
        if active:
            logits = self.cache.decode([s.row for s in active], [s.tokens[-1] for s in active])
            for seq, row in zip(active, logits):
                self._emit(seq, row)
            advanced += [s for s in active if s not in advanced]
        self.steps += 1
        return advanced

    def run(self) -> None:
        """Step until every submitted sequence has finished."""
        while self.busy:
            self.step()

    def _admit(self) -> list[Sequence]:
        groups, reserve = [], []
        while self.waiting:
            group = self.waiting[0]
            need = [len(s.prompt) + s.budget for s in group]
            if not self.cache.can_admit(reserve + need):
                break
            groups.append(self.waiting.popleft())
            reserve += need
        if not groups:
            return []
        rows, logits = self.cache.prefill([g[0].prompt for g in groups], [len(g[0].prompt) + g[0].budget
                                                                         for g in groups])
        admitted = []
        for group, row, row_logits in zip(groups, rows, logits):
            for seq in group:  # the first tokens are known before the prompt's cache is copied for the others
                self._pick(seq, row_logits)
            for seq, seq_row in zip(group, [row] + (self.cache.fork(row, len(group) - 1) if len(group) > 1 else [])):
                seq.row = seq_row
                self.running.append(seq)
                self._stop_if_done(seq)
                admitted.append(seq)
        return admitted

    def _emit(self, seq: Sequence, logits: np.ndarray) -> None:
        """Pick the sequence's next token and finish the sequence if it stops."""
        self._pick(seq, logits)
        self._stop_if_done(seq)

    def _pick(self, seq: Sequence, logits: np.ndarray) -> None:
        """Pick the sequence's next token from its logits [vocab] and record it with its log-probabilities."""
        config = seq.config
        picked = logits
        if config.ignore_eos and self.eos_ids:
            picked = logits.copy()
            picked[sorted(self.eos_ids)] = -np.inf
        seen = [np.asarray(seq.prompt + seq.tokens)] if config.repetition_penalty != 1.0 else [None]
        token = int(seq.selector(picked[None], seen)[0])
        top = logits.max()
        log_total = float(top) + float(np.log(np.exp(logits - top).sum(dtype=np.float64)))
        seq.tokens.append(token)
        seq.logprobs.append(float(logits[token]) - log_total)
        if seq.top_k_logprobs:
            best = np.argpartition(-logits, seq.top_k_logprobs)[:seq.top_k_logprobs]
            best = best[np.argsort(-logits[best], kind="stable")]
            seq.top_logprobs.append([(int(t), float(logits[t]) - log_total) for t in best])
        seq.last_token_at = time.perf_counter()
        seq.first_token_at = seq.first_token_at or seq.last_token_at

    def _stop_if_done(self, seq: Sequence) -> None:
        """Finish the sequence if its last token is a stop token or its budget is spent."""
        config, token = seq.config, seq.tokens[-1]
        stops = set(config.stop_token_ids) | (set() if config.ignore_eos else self.eos_ids)
        if token in stops:
            self.finish(seq, "stop")
        elif len(seq.tokens) >= seq.budget:
            self.finish(seq, "length")
