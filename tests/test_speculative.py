"""Speculative decoding in the shared decode loop: greedy output identical to plain decoding on every backend
and drafter, sampled output distributed as plain sampling (chi-square on a bigram model whose distribution
is known exactly), KV-cache rollback per backend, the adaptive draft length, and bad input."""

import json

import numpy as np
import pytest
from scipy.stats import chisquare

import luodi
from luodi.errors import GenerationConfigError, LuodiError
from luodi.runtimes.base import Backend
from luodi.runtimes.decode import DecodeLoop
from luodi.runtimes.drafters import ModelDrafter, PromptLookup
from luodi.runtimes.sampling import GenerationConfig
from luodi.runtimes.speculative import PROBE_EVERY, Draft, DraftLength, Speculation
from luodi.runtimes.tensorrt import import_tensorrt

# random models repeat themselves, so prompt lookup finds drafts; the last prompt gives it nothing to find
PROMPTS = ["one two three four one two three four one two", "The capital of France is", "xyzzy"]


def _greedy_identical(target, drafts, prompts=PROMPTS, **options):
    """Plain greedy vs speculative greedy with each drafter on each prompt; returns the speculative stats."""
    stats = []
    for prompt in prompts:
        plain = target.generate(prompt, **options)
        for draft in drafts:
            spec = target.generate(prompt, speculate=draft, **options)
            assert spec.token_ids == plain.token_ids, (prompt, draft)
            assert spec.finish_reason == plain.finish_reason
            stats.append(spec.stats)
    return stats


def test_prompt_lookup_greedy_is_plain_greedy(tiny, export_dir):
    stats = _greedy_identical(luodi.load(export_dir(tiny)), ["lookup"], max_new_tokens=40)
    assert sum(s.accepted for s in stats) > 0  # drafts were verified and kept, not skipped
    assert min(s.forwards_per_token for s in stats) < 1.0


def test_int4_self_draft_greedy_is_plain_greedy(tmp_path, export_dir):
    from luodi.exporters import export_model

    int4 = export_model("tiny-llama", out=tmp_path / "int4", precision="int4", progress=False)
    target = luodi.load(export_dir("tiny-llama"))
    draft = luodi.load(int4)
    stats = _greedy_identical(target, [draft, ("lookup", draft)], max_new_tokens=24)
    assert sum(s.accepted for s in stats) > 0


def test_draft_model_steps_on_the_targets_kv_cache(export_dir):
    """Two ORT exports with the same in-place buffers: the draft attends over the target's cache, so it never
    prefills the prompt nor catches up on accepted tokens (each of its steps is one token, starting where the
    target's cache ends), and greedy output is still plain greedy's."""
    target, draft = luodi.load(export_dir("tiny-llama")), luodi.load(export_dir("tiny-llama"))
    assert draft.backend.shares_cache_with(target.backend)
    steps, forward = [], draft.backend.forward_window

    def spy(state, input_ids, attention_mask, position_ids):
        steps.append((input_ids.shape[1], int(position_ids[0, 0]), state.past_length))
        return forward(state, input_ids, attention_mask, position_ids)

    draft.backend.forward_window = spy
    stats = _greedy_identical(target, [draft], max_new_tokens=24)
    assert sum(s.accepted for s in stats) > 0 and steps
    assert all(n == 1 and position == past for n, position, past in steps)
    drafter = ModelDrafter(draft.backend, 0.5)
    drafter.check(target.backend)
    assert drafter.shares_cache
    draft.backend.source = "another checkpoint"  # the same cache's shape, other weights: a cache of its own
    drafter.check(target.backend)
    assert not drafter.shares_cache


def test_draft_and_target_stop_spinning_between_runs(export_dir):
    """With a draft model, both ORT sessions' threads stop busy-waiting when a run returns (so the idle session
    leaves the cores to the running one) but still spin within a run; the output stays plain greedy."""
    target, draft = luodi.load(export_dir("tiny-llama")), luodi.load(export_dir("tiny-llama"))
    _greedy_identical(target, [draft], max_new_tokens=8)
    for lm in (target, draft):
        options = lm.backend.session.get_session_options()
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"


@pytest.mark.parametrize("kind", ["openvino", "concat", "torch"])
def test_every_backend_speculates_identically(kind, tmp_path, export_dir):
    from luodi.exporters import export_model

    if kind == "openvino":
        target = luodi.load(export_dir("tiny-llama", "openvino"))
    elif kind == "concat":  # the KV cache that grows by appending: rolled back by cutting it
        target = luodi.load(export_model("tiny-llama", out=tmp_path / "concat", passes="-inplace_kv_cache",
                                         progress=False))
        assert target.backend.kv_cache == "concat"
    else:
        target = luodi.load("tiny-llama", backend="torch")
    draft = luodi.load(export_dir("tiny-llama"))  # a draft model on another backend than the target
    assert not draft.backend.shares_cache_with(target.backend)  # so it keeps a cache of its own
    stats = _greedy_identical(target, ["lookup", draft], max_new_tokens=24)
    assert sum(s.accepted for s in stats) > 0


def _decode(backend, prompt: list[int], speculation=None, max_new_tokens: int = 24) -> DecodeLoop:
    """A greedy decode loop over token ids, run to the end."""
    loop = DecodeLoop(backend, [prompt], GenerationConfig(max_new_tokens=max_new_tokens), eos_ids=set(), pad_id=0,
                      speculation=speculation)
    for _ in loop:
        pass
    return loop


def test_tensorrt_backend_on_an_ort_stand_in_speculates_identically(export_dir):
    """TensorRTBackend over a stand-in engine that runs the trt graph on ONNX Runtime: verifying steps of up to 8
    tokens use the decode profile (the profiles come from an engine build, so TensorRT's builder is needed)."""
    from trt_stand_in import stand_in

    if import_tensorrt(required=False) is None:
        pytest.skip("TensorRT (tensorrt or tensorrt_rtx) is not installed: no engine profiles to check")

    backend, engine = stand_in(export_dir("tiny-llama", "trt"))
    prompt = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6]
    plain = _decode(backend, prompt)
    spec = _decode(backend, prompt, Speculation(_Oracle(prompt + plain.tokens[0], backend.vocab_size)))
    assert spec.tokens == plain.tokens and 0 < spec.stats.accepted < spec.stats.drafted
    assert spec.stats.target_forwards < plain.stats.target_forwards


class _Oracle:
    """Drafts the known greedy continuation, with its last token wrong every other time: verifying steps of
    every length that accept all or all but one of their drafts, whatever a random model does."""

    cost = 0.0

    def __init__(self, tokens: list[int], vocab_size: int):
        self.tokens, self.vocab_size, self.calls = tokens, vocab_size, 0

    def check(self, target) -> None:
        """Any target."""

    def start(self, capacity: int, target_state) -> None:
        """Nothing per generation."""

    def look(self, context, k) -> Draft:
        self.calls += 1
        draft = self.tokens[len(context):len(context) + k]
        if draft and self.calls % 2:
            draft[-1] = (draft[-1] + 1) % self.vocab_size
        return Draft(draft)


class _ModelOracle(_Oracle):
    """The oracle's drafts as a draft model's: not free."""

    cost = 0.3

    def look(self, context, k) -> Draft:
        return Draft([])

    def propose(self, context, k, select) -> Draft:
        return _Oracle.look(self, context, k)


@pytest.mark.parametrize("oracle, plain_steps", [(_Oracle, 0), (_ModelOracle, 1)])
def test_free_drafts_from_the_first_step_a_model_after_a_plain_one(oracle, plain_steps, monkeypatch, export_dir):
    """A free draft rides on the first decode step; a draft model's first draft waits for one plain step, the
    unit its measured costs are relative to."""
    from luodi.runtimes import speculative

    drafted, verify = [], speculative.verify

    def spy(logits, draft, select, context):
        drafted.append(len(draft.tokens))
        return verify(logits, draft, select, context)

    monkeypatch.setattr(speculative, "verify", spy)
    backend = luodi.load(export_dir("tiny-llama")).backend
    prompt = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6]
    plain = _decode(backend, prompt)
    spec = _decode(backend, prompt, Speculation(oracle(prompt + plain.tokens[0], backend.vocab_size)))
    assert spec.tokens == plain.tokens
    assert drafted[:plain_steps] == [0] * plain_steps and drafted[plain_steps] > 0


def test_stops_and_budgets_inside_accepted_drafts(export_dir):
    lm = luodi.load(export_dir("tiny-qwen2"))
    prompt = PROMPTS[0]
    plain = lm.generate(prompt, max_new_tokens=30).token_ids
    for budget in (1, 2, 3, 7, 30):
        _greedy_identical(lm, ["lookup"], [prompt], max_new_tokens=budget)
    _greedy_identical(lm, ["lookup"], [prompt], max_new_tokens=30, stop_token_ids=[plain[5]])
    _greedy_identical(lm, ["lookup"], [prompt], max_new_tokens=30, repetition_penalty=1.3)


def test_seeded_speculative_sampling_repeats(export_dir):
    lm = luodi.load(export_dir("tiny-llama"))
    options = dict(max_new_tokens=20, temperature=0.8, top_k=20, seed=7, speculate="lookup")
    assert lm.generate(PROMPTS[0], **options).token_ids == lm.generate(PROMPTS[0], **options).token_ids


def _rollback_matches_fresh(backend):
    a, b, c = [5, 6, 7, 8], [9, 10, 11], [12, 13]

    def step(state, ids):
        past = state.past_length
        return backend.forward(state, np.array([ids]), np.ones((1, past + len(ids))),
                               np.arange(past, past + len(ids))[None])

    rolled = backend.new_state(1, 16)
    step(rolled, a)
    step(rolled, b)
    backend.rollback(rolled, len(a) + 1)  # keep a and the first of b
    fresh = backend.new_state(1, 16)
    step(fresh, a + b[:1])
    np.testing.assert_allclose(step(rolled, c), step(fresh, c), atol=1e-5)
    with pytest.raises(LuodiError, match="cannot roll"):
        backend.rollback(rolled, rolled.past_length + 1)


@pytest.mark.parametrize("kind", ["ort", "openvino", "concat", "torch", "tensorrt"])
def test_rollback_then_step_equals_a_fresh_cache(kind, tmp_path, export_dir):
    from luodi.exporters import export_model

    if kind == "torch":
        backend = luodi.load("tiny-llama", backend="torch").backend
    elif kind == "concat":
        backend = luodi.load(export_model("tiny-llama", out=tmp_path / "c", passes="-inplace_kv_cache",
                                          progress=False)).backend
    elif kind == "tensorrt":  # the engine's graph (scatter buffers) on the CPU stand-in for a GPU engine
        from trt_stand_in import stand_in

        backend, _ = stand_in(export_dir("tiny-llama", "trt"))
    else:
        backend = luodi.load(export_dir("tiny-llama", kind)).backend
    _rollback_matches_fresh(backend)


class Bigram(Backend):
    """A model whose next-token distribution depends on the last token only: exact probabilities are known."""

    name = "bigram"

    def __init__(self, table: np.ndarray):
        self.table, self.vocab_size, self.max_context, self.logits_window = table, table.shape[0], 64, 8

    def forward_window(self, state, input_ids, attention_mask, position_ids):
        state.past_length += input_ids.shape[1]
        return self.table[input_ids[:, -self.logits_window:]]

    def _truncate(self, state, past_length):
        """Nothing is cached."""


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("drafter", ["model", "lookup", "both"])
def test_speculative_sampling_keeps_the_distribution(drafter):
    rng = np.random.default_rng(0)
    vocab, runs = 3, 6000
    target = Bigram(rng.normal(0, 1.5, (vocab, vocab)))
    prompt = [0, 1, 2, 0, 1, 2, 0]  # lookup proposes 1, 2, ... after it
    if drafter == "lookup":
        draft_model = PromptLookup()
    else:  # with both, a step's drafts come from lookup (a point mass) or the model (its distribution)
        draft_model = ModelDrafter(Bigram(rng.normal(0, 1.5, (vocab, vocab))), cost=0.2,
                                   lookup=PromptLookup() if drafter == "both" else None)
    counts = np.zeros((vocab,) * 4)
    drafted = accepted = 0
    for seed in range(runs):
        config = GenerationConfig(max_new_tokens=4, do_sample=True, seed=seed)
        loop = DecodeLoop(target, [prompt], config, eos_ids=set(), pad_id=0,
                          speculation=Speculation(draft_model, max_tokens=2))
        for _ in loop:
            pass
        counts[tuple(loop.tokens[0])] += 1
        drafted, accepted = drafted + loop.stats.drafted, accepted + loop.stats.accepted
    p = _softmax(target.table)
    # P(x1) P(x2 | x1) P(x3 | x2) P(x4 | x3); x1 comes from the prefill, the others may be drafted
    exact = p[prompt[-1]][:, None, None, None] * p[:, :, None, None] * p[None, :, :, None] * p[None, None, :, :]
    assert 0 < accepted < drafted  # both branches (accept, resample from the residual) were taken
    assert chisquare(counts.ravel(), exact.ravel() * runs).pvalue > 1e-3


def test_draft_length_adapts():
    length = DraftLength(max_tokens=7, draft_cost=0.0)
    for _ in range(10):
        length.update(drafted=7, accepted=7)
    assert length.next(room=100) == 7 and length.next(room=3) == 3
    for _ in range(60):  # drafts keep failing: the estimate forgets the good start
        length.update(drafted=3, accepted=0)
    lengths = [length.next(room=100) for _ in range(7 * PROBE_EVERY)]
    probes = [i + 1 for i, k in enumerate(lengths) if k]  # off, with a probe now and then, ever rarer
    assert set(lengths) == {0, 1} and probes == [PROBE_EVERY, 3 * PROBE_EVERY, 7 * PROBE_EVERY]
    expensive = DraftLength(max_tokens=7, draft_cost=0.5)
    for _ in range(10):
        expensive.update(drafted=4, accepted=2)
    assert 0 < expensive.next(room=100) < 7  # costly drafts that half land: a few at a time


def test_each_kind_of_draft_keeps_its_own_rate():
    length = DraftLength(max_tokens=7, draft_cost=0.0)
    for _ in range(20):  # one-token matches keep failing while long matches keep landing
        length.update(drafted=4, accepted=0, kind=1)
        length.update(drafted=7, accepted=7, kind=3)
    assert length.rate(3) > 0.9 and length.rate(1) < 0.1
    assert length.next(room=100, kind=3) == 7 and length.next(room=100, kind=1) == 0
    lookup = PromptLookup()
    assert lookup.look([1, 2, 3, 4, 9, 2, 3, 4], 3) == Draft([9, 2, 3], kind=3)  # "2 3 4" matched
    assert lookup.look([1, 2, 3, 4, 9, 4], 2) == Draft([9, 4], kind=1)  # only "4" matched
    classes = np.arange(20)
    classes[14] = 4  # 14 is 4 after a space (Tokenizer.word_classes)
    spaced = PromptLookup(classes=classes)
    assert spaced.look([1, 14, 9, 5, 4], 2) == Draft([9, 5], kind=1) and lookup.look([1, 14, 9, 5, 4], 2) == Draft([])
    assert spaced.look([30, 2, 30], 1) == Draft([2], kind=1)  # ids beyond the tokenizer's classes are their own


def test_lookup_reads_its_source_forward():
    """Of a match's occurrences, the first at or after where the previous draft was copied from wins over the
    latest; a new generation (start) has no such place yet."""
    lookup = PromptLookup()
    first = [7, 8, 1, 2, 9, 1, 3, 9, 7, 8]
    assert lookup.look(first, 3) == Draft([1, 2, 9], kind=2)  # "7 8" occurs once: copying from index 2 on
    later = first + [5, 9]  # "9" occurs at 4 and 7: 4 is the first past index 2, 7 the latest
    assert lookup.look(later, 2) == Draft([1, 3], kind=1)
    lookup.start(0, None)
    assert lookup.look(later, 2) == Draft([7, 8], kind=1)


def test_free_lookup_drafts_are_taken_where_they_pay_more_than_the_model():
    length = DraftLength(max_tokens=7, draft_cost=0.4)
    for _ in range(20):  # the model's drafts land 80% of the time; long lookup matches always, one-token never
        length.update(drafted=5, accepted=4)
        length.update(drafted=7, accepted=7, kind=3)
        length.update(drafted=3, accepted=0, kind=1)
    assert length.free_pays_more(3) and not length.free_pays_more(1)
    assert length.next(room=100, kind=3, free=True) == 7


def test_draft_length_weighs_measured_step_times():
    assumed, measured = DraftLength(max_tokens=7, draft_cost=0.0), DraftLength(max_tokens=7, draft_cost=0.0)
    measured.time_step(1, 0.030)
    for positions in range(2, 9):  # verifying costs 1.6 plain steps (as an unpacked LM head's repacking makes it)
        measured.time_step(positions, 0.048)
    for length in (assumed, measured):
        for accepted in [0, 1] * 10:  # about a third of the drafts land
            length.update(drafted=4, accepted=accepted)
    assert assumed.next(room=100) > 0 and measured.next(room=100) == 0
    measured.time_step(8, 0.5)  # an outlier (a first call's allocations) is outvoted ...
    for _ in range(3):  # ... by cheap verification of 8 positions, which makes drafting worth it again
        measured.time_step(8, 0.031)
    assert measured.next(room=100) == 7


def test_bad_speculation_input(export_dir):
    lm = luodi.load(export_dir("tiny-llama"))
    for k in (0, -1, 8, 2.5, True):
        with pytest.raises(GenerationConfigError, match="draft tokens"):
            lm.generate("hi", speculate="lookup", draft_tokens=k)
    with pytest.raises(LuodiError, match="one prompt at a time"):
        lm.generate(["hi", "there"], speculate="lookup")
    for bad in ("ngram", ("lookup", "lookup"), ()):
        with pytest.raises(LuodiError, match="speculate must be"):
            lm.generate("hi", speculate=bad)
    with pytest.raises(LuodiError, match="tokenizer is not the target's"):
        lm.generate("hi", speculate=luodi.load(export_dir("tiny-gpt2")))


def test_draft_for_another_max_context_is_refused(tmp_path, export_dir):
    from luodi.exporters import export_model

    short = luodi.load(export_model("tiny-llama", out=tmp_path / "short", max_context=64, progress=False))
    with pytest.raises(LuodiError, match="max context"):
        luodi.load(export_dir("tiny-llama")).generate("hi", speculate=short)


def test_export_without_a_logits_window_is_refused(export_dir):
    lm = luodi.load(export_dir("tiny-llama"))
    lm.backend.logits_window = 1  # as an export made before the window kept the last position only
    with pytest.raises(LuodiError, match="export it again"):
        lm.generate("hi", speculate="lookup")


def test_cli_generate_and_bench_speculate(tmp_path, export_dir):
    from test_manifest_and_cli import _cli

    folder = export_dir("tiny-llama")
    plain = json.loads(_cli("generate", folder, "--prompt", PROMPTS[0], "--max-new-tokens", "16", "--json").stdout)
    proc = _cli("generate", folder, "--prompt", PROMPTS[0], "--max-new-tokens", "16", "--json",
                "--speculate", "lookup", "--draft-tokens", "4")
    spec = json.loads(proc.stdout)
    assert spec["token_ids"] == plain["token_ids"] and spec["stats"]["drafted"] > 0
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPTS[0]}\n\n{PROMPTS[1]}\n")
    proc = _cli("bench", folder, "--prompts", prompts, "--new-tokens", "12", "--repeat", "1", "--json",
                "--speculate", "lookup")
    report = json.loads(proc.stdout)
    assert len(report["prompts"]) == 2 and report["all_identical"] and report["speedup_total"] > 0
    proc = _cli("generate", folder, "--prompt", PROMPTS[0], "--max-new-tokens", "16", "--json", "--speculate", folder)
    same = json.loads(proc.stdout)  # a draft model as costly as the target: drafting never pays, so none is made
    assert same["token_ids"] == plain["token_ids"] and same["stats"]["drafted"] == 0
    proc = _cli("generate", folder, "--prompt", "hi", "--speculate", "lookup", "--draft-tokens", "9")
    assert proc.returncode != 0 and "draft tokens" in proc.stderr
