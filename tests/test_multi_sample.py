"""Test-time compute in generate() and `luodi generate` (luodi/multi_sample.py): beam search equals transformers'
generate(num_beams=4) on fp32 tiny-llama, EOS-finished hypotheses, length penalties and early stopping included;
n samples, best_of, vote and log-probabilities; bad settings are one-line errors."""

import json

import pytest
import torch

import luodi
from luodi.cli import main
from luodi.errors import LuodiError
from luodi.multi_sample import extract_answer

BEAM_SETTINGS = [(1.0, False), (2.0, True), (-1.0, "never"), (0.5, "never"), (0.0, True)]


def _hf_beams(model, ids, n, stops, length_penalty, early_stopping):
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n, do_sample=False, num_beams=4, length_penalty=length_penalty,
                             early_stopping=early_stopping, eos_token_id=stops, pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("target", ["ort", "openvino"])
def test_beam_search_equals_transformers(target, export_dir, reference):
    """Prompts of random ids (never seen by any other test); a token of each prompt's plain beam output is made a
    stop token too, so hypotheses finish early and every early-stopping rule decides something."""
    model, _ = reference("tiny-llama")
    lm = luodi.load(export_dir("tiny-llama", target))
    rng = torch.Generator().manual_seed(28)
    finished_early = 0
    for _ in range(3):
        ids = torch.randint(3, 250, (int(torch.randint(2, 12, (1,), generator=rng)),), generator=rng).tolist()
        plain = _hf_beams(model, ids, 20, sorted(lm.eos_ids), 1.0, False)
        assert lm.generate(ids, num_beams=4, max_new_tokens=20).token_ids == plain
        stop = plain[5]
        for length_penalty, early_stopping in BEAM_SETTINGS:
            expected = _hf_beams(model, ids, 20, sorted(lm.eos_ids | {stop}), length_penalty, early_stopping)
            result = lm.generate(ids, num_beams=4, max_new_tokens=20, length_penalty=length_penalty,
                                 early_stopping=early_stopping, stop_token_ids=[stop])
            assert result.token_ids == expected, (ids, length_penalty, early_stopping)
            finished_early += len(expected) < 20
    assert finished_early >= 5


@pytest.fixture(scope="module")
def lm(export_dir):
    return luodi.load(export_dir("tiny-llama"))


def test_n_samples(lm):
    """n greedy samples are the lone greedy output n times; n samples are drawn by default, each with the
    log-probabilities of its tokens."""
    alone = lm.generate("hello there", max_new_tokens=8, ignore_eos=True)
    greedy = lm.generate("hello there", n=3, do_sample=False, max_new_tokens=8, ignore_eos=True)
    assert [r.token_ids for r in greedy] == [alone.token_ids] * 3
    sampled = lm.generate("hello there", n=4, max_new_tokens=8, seed=1, ignore_eos=True, logprobs=2)
    assert len(sampled) == 4 and len({tuple(r.token_ids) for r in sampled}) > 1
    for r in sampled:
        assert len(r.logprobs) == len(r.token_ids) == 8 and all(lp <= 0 for lp in r.logprobs)
        assert len(r.top_logprobs) == 8 and all(len(alts) == 2 for alts in r.top_logprobs)


def test_best_of_picks_the_highest_score(lm):
    best = lm.generate("hello there", best_of=5, max_new_tokens=6, seed=3)
    means = [sum(s.logprobs) / len(s.logprobs) for s in best.samples]
    assert len(best.samples) == 5 and best.score == pytest.approx(max(means))
    assert best.token_ids == best.samples[means.index(max(means))].token_ids
    by_last = lm.generate("hello there", best_of=5, max_new_tokens=6, seed=3, score=lambda r: r.token_ids[-1])
    assert by_last.token_ids[-1] == max(s.token_ids[-1] for s in by_last.samples)


def test_vote_returns_the_majority_with_counts(lm):
    result = lm.generate("hello there", vote=7, max_new_tokens=4, seed=5, extract=lambda t: str(len(t) % 3))
    answers = [str(len(s.text) % 3) for s in result.samples]
    assert sum(result.votes.values()) == 7 and result.votes == {a: answers.count(a) for a in set(answers)}
    assert result.votes[result.answer] == max(result.votes.values())
    assert str(len(result.text) % 3) == result.answer


def test_default_answer_extractor():
    assert extract_answer("so 3 + 4 = 7.\n#### 7") == "7"
    assert extract_answer("The answer is 1,250 apples, not 12") == "1250"
    assert extract_answer("first 2 then 5.0") == "5"
    assert extract_answer("no digits here\n  Paris  \n") == "Paris"
    assert extract_answer("") is None


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n must be"), ({"best_of": 0}, "best_of must be"), ({"num_beams": 2, "temperature": 0.7}, "greedy"),
    ({"n": 2, "vote": 3}, "choose one"), ({"num_beams": 2, "early_stopping": "soon"}, "early_stopping"),
    ({"logprobs": -1}, "logprobs"), ({"n": 2, "speculate": "lookup"}, "speculate")])
def test_bad_settings_are_one_line_errors(lm, kwargs, message):
    with pytest.raises(LuodiError, match=message) as error:
        lm.generate("hi", max_new_tokens=3, **kwargs)
    assert "\n" not in str(error.value)
    with pytest.raises(LuodiError, match="one prompt"):
        lm.generate(["a", "b"], n=2, max_new_tokens=2)


def test_cli_generate_num_beams_n_and_vote(lm, export_dir, capsys):
    folder = str(export_dir("tiny-llama"))
    assert main(["generate", folder, "--prompt", "hello there", "--num-beams", "4", "--max-new-tokens", "6",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["token_ids"] == lm.generate("hello there", num_beams=4, max_new_tokens=6).token_ids and "score" in out
    assert main(["generate", folder, "--prompt", "hi", "--n", "3", "--max-new-tokens", "4", "--seed", "2",
                 "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["generate", folder, "--prompt", "hi", "--vote", "3", "--max-new-tokens", "4", "--seed", "2"]) == 0
    assert "votes" in capsys.readouterr().err
