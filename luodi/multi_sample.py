"""Test-time compute for one prompt: n samples, best-of-N, self-consistency voting and beam search.

Every mode prefills the prompt once and forks its cache into the rows it needs (runtimes/scheduler.py for
samples, runtimes/beam_search.py for beams). Samples are drawn (temperature 1) unless the call asks otherwise:
n greedy samples would all be the same. Each sample's result carries the log-probability of every chosen
token and, with logprobs=k, the k most likely alternatives at each step.

- n=N: N completions (a list of GenerationResult).
- best_of=N: N samples, the one with the highest score returned: the mean log-probability of its tokens, or
  `score(result)` when given; the result's `samples` holds all N.
- vote=N: self-consistency: N samples, an answer extracted from each (`extract(text)`, default
  extract_answer), the sample of the most frequent answer returned with `answer` and `votes` (answer -> count).
- num_beams=B: beam search as transformers defines it (length_penalty, early_stopping); greedy only.
"""

import re
import time
from collections import Counter
from dataclasses import replace

from .api import GenerationResult, _cut_at_stop
from .errors import GenerationConfigError, LuodiError
from .runtimes.beam_search import beam_search, check_beam_options
from .runtimes.decode import GenerationStats
from .runtimes.sequence_cache import cache_for
from .runtimes.streaming import IncrementalDecoder

_MARKED = re.compile(r"(?:####|answer is|answer:)\s*\$?(-?[\d,]*\.?\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_answer(text: str) -> str | None:
    """The default answer of a sample for voting: a number after '####', 'answer is' or 'answer:', else the last
    number in the text (commas and a trailing '.0' dropped), else its last non-empty line; None for empty text."""
    marked = _MARKED.findall(text)
    numbers = marked or _NUMBER.findall(text)
    if numbers:
        value = numbers[-1].replace(",", "")
        return value[:-2] if value.endswith(".0") else value
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _positive(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GenerationConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _sampled(config):
    """The config, drawing samples unless the caller chose greedy or sampling settings themselves."""
    untouched = config.do_sample is None and config.temperature is None and config.top_k == 0 and config.top_p == 1
    return replace(config, do_sample=True) if untouched else config


def generate_many(lm, prompt, config, n: int = 1, best_of: int | None = None, vote: int | None = None,
                  num_beams: int = 1, length_penalty: float = 1.0, early_stopping=False, logprobs: int = 0,
                  score=None, extract=None):
    """LanguageModel.generate's test-time compute for one prompt (module docstring)."""
    chosen = [name for name, value in (("n", n != 1), ("best_of", best_of), ("vote", vote),
                                       ("num_beams", num_beams != 1)) if value]
    if len(chosen) > 1:
        raise LuodiError(f"choose one of n, best_of, vote and num_beams, got {', '.join(chosen)}")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        raise LuodiError("n, best_of, vote, num_beams and logprobs take one prompt, not a list of prompts")
    if not isinstance(logprobs, int) or isinstance(logprobs, bool) or not 0 <= logprobs <= 20:
        raise GenerationConfigError(f"logprobs must be an integer in 0..20, got {logprobs!r}")
    ids = lm._encode(prompt)
    if num_beams != 1:
        check_beam_options(num_beams, length_penalty, early_stopping)
        return _beams(lm, ids, config, num_beams, length_penalty, early_stopping)
    if best_of is not None:
        results = samples(lm, ids, _sampled(config), _positive("best_of", best_of), logprobs)
        scores = [score(r) if score else sum(r.logprobs) / max(len(r.logprobs), 1) for r in results]
        best = max(range(len(results)), key=scores.__getitem__)
        return replace(results[best], score=float(scores[best]), samples=results)
    if vote is not None:
        results = samples(lm, ids, _sampled(config), _positive("vote", vote), logprobs)
        answers = [(extract or extract_answer)(r.text) for r in results]
        votes = Counter(a for a in answers if a is not None)
        if not votes:
            return replace(results[0], votes={}, samples=results)
        answer = votes.most_common(1)[0][0]
        return replace(results[answers.index(answer)], answer=answer, votes=dict(votes), samples=results)
    n = _positive("n", n)
    results = samples(lm, ids, _sampled(config) if n > 1 else config, n, logprobs)
    return results if n > 1 else results[0]


def samples(lm, prompt_ids: list[int], config, n: int, logprobs: int = 0) -> list[GenerationResult]:
    """n completions of one prompt through the scheduler (one prefill, forked), stop strings cut as they appear."""
    scheduler = lm.scheduler(max_rows=n)
    sequences = scheduler.submit(prompt_ids, config, n=n, logprobs=logprobs)
    decoders = [IncrementalDecoder(lm.tokenizer.decode) for _ in sequences]
    fed = [0] * n
    while scheduler.busy:
        scheduler.step()
        for i, seq in enumerate(sequences):
            for token in seq.tokens[fed[i]:]:
                if config.ignore_eos or token not in lm.eos_ids:
                    decoders[i].push(token)
            fed[i] = len(seq.tokens)
            if config.stop_strings and not seq.finished and _cut_at_stop(decoders[i].text, config.stop_strings)[1]:
                scheduler.finish(seq, "stop_string")
    results = []
    for seq, decoder in zip(sequences, decoders):
        if seq.finish_reason != "stop_string":
            decoder.flush()
        stats = GenerationStats(prompt_tokens=len(prompt_ids), new_tokens=len(seq.tokens), ttft_s=seq.ttft_s,
                                decode_tokens_per_s=seq.decode_tokens_per_s,
                                total_s=(seq.last_token_at or seq.arrived) - seq.arrived,
                                target_forwards=scheduler.steps)
        results.append(GenerationResult(_cut_at_stop(decoder.text, config.stop_strings)[0], seq.tokens,
                                        seq.finish_reason, stats, logprobs=seq.logprobs,
                                        top_logprobs=seq.top_logprobs if logprobs else None))
    return results


def _beams(lm, prompt_ids: list[int], config, num_beams: int, length_penalty: float, early_stopping):
    """Beam search's best hypothesis as a GenerationResult (its score the length-penalised log-probability)."""
    if config.sampling or config.repetition_penalty != 1.0 or config.stop_strings:
        raise LuodiError("beam search is greedy here: no sampling, repetition_penalty or stop_strings with num_beams")
    if config.max_new_tokens == 0:
        raise GenerationConfigError("beam search needs max_new_tokens >= 1")
    stops = set(config.stop_token_ids) | lm.eos_ids
    start = time.perf_counter()
    cache = cache_for(lm.backend, lm.pad_id, max_rows=num_beams)
    budget = min(config.max_new_tokens, lm.backend.max_context - len(prompt_ids))
    best = beam_search(cache, prompt_ids, budget, num_beams, stops, length_penalty, early_stopping,
                       suppress=sorted(lm.eos_ids) if config.ignore_eos else ())
    text_ids = [t for t in best.tokens if config.ignore_eos or t not in lm.eos_ids]
    reason = "stop" if best.tokens and best.tokens[-1] in stops and not config.ignore_eos else "length"
    stats = GenerationStats(prompt_tokens=len(prompt_ids), new_tokens=len(best.tokens),
                            total_s=time.perf_counter() - start, target_forwards=best.steps)
    return GenerationResult(lm.tokenizer.decode(text_ids), best.tokens, reason, stats, score=best.score)
