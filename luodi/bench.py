"""`luodi bench`: TTFT, decode tokens/s (prefill excluded) and peak RSS, as medians over repeated runs after
a warm-up, with the same protocol as the anchor kit in shared/anchors (greedy, optional EOS suppression)."""

import json
import os
import resource
import statistics
import time
from pathlib import Path

from .errors import LuodiError

_FILLER = ("The history of computing is a story of people who wanted machines to do more with less. "
           "Each generation of hardware brought new constraints, and each constraint new ideas. ")


def anchor_workload(name: str) -> tuple[list[int], int]:
    """Prompt ids and new-token count of an anchor-kit workload (W1, W2) from $ANCHORS_DIR/data/prompts.json."""
    root = Path(os.environ.get("ANCHORS_DIR", Path.home() / ".cache" / "luodi-anchors"))
    path = root / "data" / "prompts.json"
    if not path.is_file():
        raise LuodiError(f"{path} not found: run `bash ../shared/anchors/setup.sh` first")
    entry = json.loads(path.read_text())[name]
    return entry["ids"], entry["new_tokens"]


def synthetic_prompt(tokenizer, n_tokens: int) -> list[int]:
    """A prompt of exactly n_tokens ids, cut from English filler text."""
    repeats = 1
    while len(ids := tokenizer.encode(_FILLER * repeats)) < n_tokens:
        repeats *= 2
    return ids[:n_tokens]


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MB (model load included)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_bench(lm, prompt_ids: list[int], new_tokens: int, repeat: int, ignore_eos: bool, warmup: int = 1) -> dict:
    """Time `repeat` greedy generations of prompt_ids (after `warmup` untimed ones); medians and all values."""
    runs = []
    for i in range(warmup + repeat):
        result = lm.generate(prompt_ids, max_new_tokens=new_tokens, ignore_eos=ignore_eos)
        if i >= warmup:
            runs.append(result)
    ttft = [r.stats.ttft_s for r in runs]
    tps = [r.stats.decode_tokens_per_s for r in runs]
    return {"backend": lm.backend.name, "prompt_tokens": len(prompt_ids), "new_tokens": runs[0].stats.new_tokens,
            "repeat": repeat, "ttft_s": statistics.median(ttft), "decode_tokens_per_s": statistics.median(tps),
            "ttft_s_all": ttft, "decode_tokens_per_s_all": tps, "peak_rss_mb": peak_rss_mb(),
            "token_ids": runs[0].token_ids, "ids_identical_across_runs": all(r.token_ids == runs[0].token_ids
                                                                             for r in runs)}


def timed_load(loader):
    """(loaded object, seconds) for a zero-argument loader."""
    t = time.perf_counter()
    obj = loader()
    return obj, time.perf_counter() - t
