"""Speculative decoding inside the shared decode loop, for every backend that can roll its KV cache back.

Each step a drafter proposes up to k tokens after the pending one (the last token picked, not yet in the
target's cache); the target runs the pending token and the drafts as one step of k + 1 positions, keeps the
longest prefix of drafts it agrees with and adds one token of its own: the correction at the first rejected
draft, or a bonus token after the last. The cache is then rolled back to the kept length (a length update for
the in-place caches). Greedy output is token for token plain greedy's; sampled output keeps plain sampling's
distribution: a draft x is accepted with probability min(1, p(x) / q(x)), else the token is drawn from the
residual max(0, p - q), normalised (Leviathan et al. 2023; Chen et al. 2023). The draft length adapts to the
running acceptance rate and the measured cost of drafting and verifying, and drops to 0 (plain steps, with an
occasional probe) when drafts do not pay.
"""

import statistics
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..errors import GenerationConfigError, LuodiError
from .sampling import TokenSelector
from ..contract.graph import STEP_WINDOW

MAX_DRAFT_TOKENS = STEP_WINDOW - 1  # a verifying step is the pending token plus the drafts
# the assumed cost of one more verified position, in one-token steps, until it is measured (and always when a seed
# fixes the schedule); on SmolLM2, ONNX Runtime, 2 threads it measured 0.05 (fp32 with a packed LM head) to 0.25 (int4)
VERIFY_COST = 0.1
PRIOR_ACCEPTANCE, PRIOR_WEIGHT, DECAY = 0.7, 4.0, 0.9  # the acceptance estimate's start and its forgetting
# per-token acceptance a draft kind starts from, by Draft.kind (prompt lookup: the matched n-gram's length, 3 for
# 3 or more); fitted to SmolLM2-135M's lookup drafts on the grounded and open-ended prompts (configs/prompts)
KIND_PRIORS = {1: 0.4, 2: 0.6, 3: 0.85}
PROBE_EVERY, MAX_PROBE_EVERY = 16, 256  # plain steps before a draft is tried again; doubled after each probe
TIMES_KEPT = 5  # step times kept per step length; their median is robust to a first call's allocations


@dataclass
class Draft:
    """Proposed tokens and, for sampled drafts, the distribution each was drawn from ([k, vocab]); None means
    each token was proposed with certainty (q is a point mass), as prompt lookup's are. `timing` (forwards,
    seconds): what a draft model's steady one-token steps took, leaving out catching up on the context (None:
    a free draft, not timed). `kind` sorts drafts whose acceptance differs (prompt lookup: the matched n-gram's
    length), so the draft length is chosen from the acceptance of drafts of the same kind."""

    tokens: list[int]
    probs: np.ndarray | None = None
    timing: tuple[int, float] | None = None
    kind: int | None = None


@dataclass
class DraftLength:
    """Chooses the next draft length from the running per-token acceptance rate a: the k in 0..max_tokens that
    maximises the expected tokens per step, (1 - a^(k+1)) / (1 - a), over the step's cost in units of a plain
    one-token step: drafting k tokens plus verifying k + 1 positions. With `timed`, those costs are the measured
    times of this generation's own steps (the median of the latest few per step length; an untried length is
    assumed cheap, so it gets tried); otherwise, or before a plain step is measured, they come from a fixed
    model: 1 + k (draft_cost + VERIFY_COST). When k = 0 wins, one draft is still tried after PROBE_EVERY steps,
    so the rate can recover, then after twice as many while drafting keeps not paying. Each kind of draft
    (Draft.kind) has its own acceptance rate.
    """

    max_tokens: int
    draft_cost: float
    timed: bool = True
    hits: dict = field(default_factory=dict)  # draft kind -> decayed accepted tokens
    trials: dict = field(default_factory=dict)  # draft kind -> decayed trials (accepted tokens and rejections)
    idle: int = 0
    probe_every: int = PROBE_EVERY
    step_s: dict = field(default_factory=dict)  # positions in a target step -> its latest TIMES_KEPT durations
    draft_s: deque = field(default_factory=lambda: deque(maxlen=TIMES_KEPT))  # seconds per drafted token

    def _counts(self, kind: int | None) -> tuple[float, float]:
        """(hits, trials) of drafts of this kind so far, starting from its prior."""
        prior = KIND_PRIORS.get(kind, PRIOR_ACCEPTANCE) * PRIOR_WEIGHT
        return self.hits.get(kind, prior), self.trials.get(kind, PRIOR_WEIGHT)

    @property
    def has_unit(self) -> bool:
        """Whether a plain one-token step has been timed (or timing is off): what measured costs are relative to."""
        return not self.timed or 1 in self.step_s

    def rate(self, kind: int | None = None) -> float:
        """The running per-token acceptance rate of drafts of this kind."""
        hits, trials = self._counts(kind)
        return min(hits / trials, 0.999)

    def _best(self, kind: int | None, free: bool) -> tuple[int, float]:
        """(the draft length expected to give the most tokens per unit of step cost, that rate) for drafts of
        this kind; `free` drafts (prompt lookup's) cost only their verification."""
        rate = self.rate(kind)
        gains = [(1 - rate ** (k + 1)) / (1 - rate) / self.cost(k, free) for k in range(self.max_tokens + 1)]
        k = int(np.argmax(gains))
        return k, gains[k]

    def free_pays_more(self, kind: int) -> bool:
        """Whether a free draft of this kind is expected to give more tokens per unit of cost than the draft
        model's drafts."""
        return self._best(kind, free=True)[1] >= self._best(None, free=False)[1]

    def next(self, room: int, kind: int | None = None, free: bool = False) -> int:
        """The draft length for the next step, at most `room` (what the budget and the cache leave), for a draft
        of this kind."""
        k = self._best(kind, free)[0]
        if k > 0:
            self.probe_every = PROBE_EVERY
        else:
            self.idle += 1
            if self.idle >= self.probe_every:  # a probe; while drafting does not pay, each waits twice as long
                self.idle, k, self.probe_every = 0, 1, min(2 * self.probe_every, MAX_PROBE_EVERY)
        return max(0, min(k, room))

    def cost(self, k: int, free: bool = False) -> float:
        """A step drafting k tokens, in plain one-token steps (medians of the measured times); a free draft's
        step is its verification only."""
        one = self._median(self.step_s.get(1)) if self.timed else None
        if one is None:
            return 1 + k * ((0.0 if free else self.draft_cost) + VERIFY_COST)
        verify = self._median(self.step_s.get(k + 1)) or one * (1 + k * VERIFY_COST)
        draft = 0.0 if free else (self._median(self.draft_s) or self.draft_cost * one)
        return (verify + k * draft) / one

    @staticmethod
    def _median(times) -> float | None:
        """The median of a few times (pure Python: np.median took 30 us, and choosing a draft length takes
        up to 24 medians)."""
        return statistics.median(times) if times else None

    def update(self, drafted: int, accepted: int, kind: int | None = None) -> None:
        """Count a verified step: `accepted` of `drafted` tokens of this kind kept (a shortfall is one rejection)."""
        hits, trials = self._counts(kind)
        self.hits[kind] = DECAY * hits + accepted
        self.trials[kind] = DECAY * trials + accepted + (accepted < drafted)

    def time_step(self, positions: int, seconds: float) -> None:
        """Record how long a target step of this many positions took."""
        self.step_s.setdefault(positions, deque(maxlen=TIMES_KEPT)).append(seconds)

    def time_draft(self, tokens: int, seconds: float) -> None:
        """Record how long drafting this many tokens took."""
        self.draft_s.append(seconds / tokens)


def verify(logits: np.ndarray, draft: Draft, select: TokenSelector, context: list[int]) -> tuple[int, int]:
    """(how many drafts the target accepts, its own next token after them), from the target's logits at the
    pending token and each draft ([k + 1, vocab]); `context` is every token before the drafts."""
    def seen(i: int) -> list:
        return select.seen(context + draft.tokens[:i])

    for i, token in enumerate(draft.tokens):
        if not select.config.sampling:
            target = int(select(logits[i:i + 1], seen(i))[0])
            if target != token:
                return i, target
            continue
        p = select.probabilities(logits[i:i + 1], seen(i))[0]
        q_token = 1.0 if draft.probs is None else draft.probs[i, token]
        if select.rng.random() < min(1.0, p[token] / q_token):
            continue
        residual = p.copy()
        if draft.probs is None:
            residual[token] = 0.0
        else:
            residual = np.maximum(residual - draft.probs[i], 0.0)
        return i, select.draw(residual / residual.sum())
    k = len(draft.tokens)
    return k, int(select(logits[k:k + 1], seen(k))[0])


class Speculation:
    """A generation's speculative decoding: a drafter (prompt lookup or a draft model) and the most drafts one
    step may verify. Give it to the DecodeLoop; it runs one sequence at a time."""

    def __init__(self, drafter, max_tokens: int = MAX_DRAFT_TOKENS):
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_DRAFT_TOKENS:
            raise GenerationConfigError(f"draft tokens must be an integer in 1..{MAX_DRAFT_TOKENS} (a verifying step "
                                        f"is at most {STEP_WINDOW} positions), got {max_tokens!r}")
        self.drafter, self.max_tokens = drafter, max_tokens

    def check(self, backend, batch: int) -> None:
        """Refuse what cannot be verified: batches, graphs without enough logits, a mismatched draft model."""
        if batch != 1:
            raise LuodiError(f"speculative decoding runs one prompt at a time; got {batch} (generate them one by one, "
                             "or batch them without speculation)")
        window = backend.logits_window
        if window is not None and window < self.max_tokens + 1:
            raise LuodiError(f"this export returns logits for the last {window} position(s) of a step; verifying "
                             f"{self.max_tokens} drafts needs {self.max_tokens + 1}: export it again with this luodi")
        self.drafter.check(backend)

    def run(self, loop):
        """The decode loop's steps with drafting (a generator, as DecodeLoop._plain)."""
        backend, prompt, stats = loop.backend, list(loop.prompts[0]), loop.stats
        select = TokenSelector(loop.config)
        capacity = len(prompt) + loop.budget
        state = backend.new_state(1, capacity)
        self.drafter.start(capacity, state)
        # measured costs pick the draft length, except where a seed must give the same samples every run
        timed = not (loop.config.sampling and loop.config.seed is not None)
        length = DraftLength(self.max_tokens, self.drafter.cost, timed=timed)
        logits = loop.target_forward(state, np.array([prompt]), np.ones((1, len(prompt))),
                                     np.arange(len(prompt))[None])[0, -1:]
        pending = int(select(loop.suppress_eos(logits), select.seen(prompt))[0])
        context = prompt + [pending]
        loop.emit(0, [pending])
        loop.record()
        yield
        while not loop.done:
            room = min(self.max_tokens, loop.budget - len(loop.tokens[0]) - 1)
            draft = self._draft(context, room, select, length) if room > 0 else Draft([])
            if draft.timing and draft.timing[0]:
                length.time_draft(*draft.timing)
            step = [pending] + draft.tokens
            past = state.past_length
            started = time.perf_counter()
            window = loop.target_forward(state, np.array([step]), np.ones((1, past + len(step))),
                                         np.arange(past, past + len(step))[None])[0]
            length.time_step(len(step), time.perf_counter() - started)
            accepted, pending = verify(loop.suppress_eos(window), draft, select, context)
            if draft.tokens:
                backend.rollback(state, past + 1 + accepted)
                length.update(len(draft.tokens), accepted, draft.kind)
                stats.drafted += len(draft.tokens)
                stats.accepted += accepted
                stats.verify_steps += 1
            new = draft.tokens[:accepted] + [pending]
            context += new
            loop.emit(0, new)
            loop.record()
            yield

    def _draft(self, context: list[int], room: int, select, length: DraftLength) -> Draft:
        """This step's drafts: a free look first (prompt lookup), cut to the length its kind's acceptance pays
        for; the draft model's instead when it has one and its drafts are expected to pay more. The draft model
        waits for a plain step to be timed (the first step without a free draft), the unit its measured costs
        are expressed in."""
        has_model = self.drafter.cost > 0
        draft = self.drafter.look(context, room)
        if draft.tokens and (not has_model or length.free_pays_more(draft.kind)):
            draft.tokens = draft.tokens[:length.next(room, draft.kind, free=True)]
            return draft
        if has_model and length.has_unit and (k := length.next(room)):
            return self.drafter.propose(context, k, select)
        return Draft([])
