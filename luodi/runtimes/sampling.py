"""Generation settings and next-token selection: greedy, or sampling with temperature, top-k, top-p and a
seed; repetition penalty. The order matches transformers' generate (penalty, temperature, top-k, top-p)."""

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from ..errors import GenerationConfigError


@dataclass
class GenerationConfig:
    """What to generate and how.

    Greedy unless sampling is asked for: do_sample=True, or (with do_sample left None) a temperature > 0,
    a top_k or a top_p < 1. A temperature of 0 always means greedy.
    """

    max_new_tokens: int = 128
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    stop_strings: list[str] = field(default_factory=list)
    ignore_eos: bool = False

    def validate(self) -> "GenerationConfig":
        """Raise GenerationConfigError on values no sampler can use (wrong types, NaN and infinities included)."""
        checks = [
            (_integer(self.max_new_tokens, 0), f"max_new_tokens must be an integer >= 0, got {self.max_new_tokens!r}"),
            (self.temperature is None or _finite(self.temperature) and self.temperature >= 0,
             f"temperature must be >= 0 and finite, got {self.temperature!r}"),
            (_finite(self.top_p) and 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}"),
            (_integer(self.top_k, 0), f"top_k must be an integer >= 0, got {self.top_k!r}"),
            (_finite(self.repetition_penalty) and self.repetition_penalty > 0,
             f"repetition_penalty must be > 0 and finite, got {self.repetition_penalty!r}"),
            (self.seed is None or _integer(self.seed, 0), f"seed must be an integer >= 0, got {self.seed!r}"),
            (isinstance(self.stop_token_ids, (list, tuple, set)) and all(_integer(t, 0) for t in self.stop_token_ids),
             f"stop_token_ids must be a list of integers >= 0, got {self.stop_token_ids!r}"),
            (isinstance(self.stop_strings, (list, tuple)) and all(isinstance(s, str) and s for s in self.stop_strings),
             "stop_strings must be a list of non-empty strings"),
        ]
        for ok, message in checks:
            if not ok:
                raise GenerationConfigError(message)
        return self

    @property
    def sampling(self) -> bool:
        """True when tokens are sampled rather than picked greedily."""
        if self.temperature == 0:
            return False
        if self.do_sample is None:
            return self.temperature is not None or self.top_k > 0 or self.top_p < 1.0
        return bool(self.do_sample)


def _integer(value, low: int) -> bool:
    """An integer >= low (bools are not counted as integers)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def _finite(value) -> bool:
    """A real number that is neither NaN nor infinite (bools excluded)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def apply_repetition_penalty(logits: np.ndarray, seen: list[np.ndarray], penalty: float) -> np.ndarray:
    """CTRL-style penalty on tokens already in each row's context (divide positive, multiply negative)."""
    if penalty == 1.0:
        return logits
    logits = logits.copy()
    for row, ids in enumerate(seen):
        ids = np.unique(ids)
        vals = logits[row, ids]
        logits[row, ids] = np.where(vals > 0, vals / penalty, vals * penalty)
    return logits


def _filter_top_k_top_p(logits: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Mask (to -inf) what top-k and then top-p (nucleus) exclude; the most likely token always stays."""
    logits = logits.astype(np.float64, copy=True)
    if 0 < top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k][:, None]
        logits[logits < kth] = -np.inf
    if top_p < 1.0:
        order = np.argsort(-logits, axis=-1)
        sorted_logits = np.take_along_axis(logits, order, axis=-1)
        probs = np.exp(sorted_logits - sorted_logits[:, :1])
        probs /= probs.sum(axis=-1, keepdims=True)
        cumulative = np.cumsum(probs, axis=-1)
        drop_sorted = cumulative - probs >= top_p  # keep tokens until the mass before them reaches top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        logits[drop] = -np.inf
    return logits


class TokenSelector:
    """Picks each row's next token from last-position logits according to a GenerationConfig; also gives the
    sampling distribution itself, which speculative sampling compares between target and drafter."""

    def __init__(self, config: GenerationConfig):
        self.config = config
        self.rng = np.random.default_rng(config.seed)

    def __call__(self, logits: np.ndarray, seen: list[np.ndarray]) -> np.ndarray:
        if not self.config.sampling:
            return apply_repetition_penalty(logits, seen, self.config.repetition_penalty).argmax(axis=-1)
        return np.array([self.draw(row) for row in self.probabilities(logits, seen)])

    def probabilities(self, logits: np.ndarray, seen: list[np.ndarray]) -> np.ndarray:
        """Each row's sampling distribution [rows, vocab] after penalty, temperature, top-k and top-p."""
        cfg = self.config
        logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
        logits = _filter_top_k_top_p(logits / (cfg.temperature or 1.0), cfg.top_k, cfg.top_p)
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return probs / probs.sum(axis=-1, keepdims=True)

    def seen(self, tokens: list[int]) -> list:
        """The one-row context a repetition penalty reads; not built when there is no penalty to apply."""
        return [np.asarray(tokens)] if self.config.repetition_penalty != 1.0 else [None]

    def draw(self, probs: np.ndarray) -> int:
        """One token drawn from a distribution [vocab] with this selector's seeded generator."""
        return int(self.rng.choice(probs.shape[-1], p=probs))
