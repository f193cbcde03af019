"""`luodi bench --concurrency C` and `luodi bench --n N`: many sequences at once against one, side by side.

--concurrency C: C independent greedy requests for the prompt arrive together and run through the scheduler
(continuous batching); the same with one request alternates with it, so both see the same machine. Reported:
aggregate decode tokens/s (every request's tokens after its first, over the span from the first request's
first token to the last token), its ratio to one request's, each request's own decode tokens/s, TTFT
percentiles (from arrival: queueing and the other requests' prefills included) and the KV pool's memory.

--n N: N sampled completions of one prompt in one call (its prefill runs once, forked into N rows) against one
completion (TTFT) and against N separate calls (total time).
"""

import statistics
import time

import numpy as np

from .bench import peak_rss_mb
from .runtimes.sampling import GenerationConfig


def _percentiles(values: list[float]) -> dict:
    return {f"p{p}": float(np.percentile(values, p)) for p in (50, 90, 99)}


def _concurrent_run(lm, prompt_ids: list[int], new_tokens: int, concurrency: int, ignore_eos: bool,
                    kv_positions: int | None = None) -> dict:
    """One run of `concurrency` requests arriving together (a pool of `kv_positions` positions, if set, admits
    what fits and queues the rest): their timings and the pool's memory."""
    scheduler = lm.scheduler(max_rows=concurrency, kv_positions=kv_positions)
    config = GenerationConfig(max_new_tokens=new_tokens, ignore_eos=ignore_eos)
    start = time.perf_counter()
    sequences = [scheduler.submit(prompt_ids, config)[0] for _ in range(concurrency)]
    scheduler.run()
    end = time.perf_counter()
    decoded = sum(len(s.tokens) - 1 for s in sequences)
    span = max(s.last_token_at for s in sequences) - min(s.first_token_at for s in sequences)
    return {"aggregate_decode_tokens_per_s": decoded / span if span > 0 else float("nan"),
            "aggregate_tokens_per_s": sum(len(s.tokens) for s in sequences) / (end - start),
            "request_decode_tokens_per_s": [s.decode_tokens_per_s for s in sequences],
            "ttft_s": [s.ttft_s for s in sequences], "new_tokens": [len(s.tokens) for s in sequences],
            "token_ids": [s.tokens for s in sequences], "kv_pool": scheduler.cache.memory(),
            "decode_steps": scheduler.steps}


def run_concurrency_bench(lm, prompt_ids: list[int], new_tokens: int, concurrency: int, repeat: int,
                          ignore_eos: bool, warmup: int = 1, kv_positions: int | None = None) -> dict:
    """`repeat` alternating pairs (one request, then `concurrency` together in a pool of `kv_positions`
    positions if set) after `warmup` untimed pairs."""
    runs = {1: [], concurrency: []}
    for i in range(warmup + repeat):
        for c in runs:
            run = _concurrent_run(lm, prompt_ids, new_tokens, c, ignore_eos, kv_positions if c > 1 else None)
            if i >= warmup:
                runs[c].append(run)
    one, many = runs[1], runs[concurrency]
    aggregate = statistics.median(r["aggregate_decode_tokens_per_s"] for r in many)
    single = statistics.median(r["aggregate_decode_tokens_per_s"] for r in one)
    per_request = [v for r in many for v in r["request_decode_tokens_per_s"]]
    reference = one[0]["token_ids"][0]
    return {"backend": lm.backend.name, "inference_precision": lm.backend.inference_precision,
            "prompt_tokens": len(prompt_ids), "new_tokens": new_tokens, "concurrency": concurrency,
            "repeat": repeat, "aggregate_decode_tokens_per_s": aggregate,
            "aggregate_decode_tokens_per_s_all": [r["aggregate_decode_tokens_per_s"] for r in many],
            "single_decode_tokens_per_s": single, "speedup_vs_one": aggregate / single,
            "aggregate_tokens_per_s": statistics.median(r["aggregate_tokens_per_s"] for r in many),
            "per_request_decode_tokens_per_s": per_request,
            "per_request_decode_tokens_per_s_median": statistics.median(per_request),
            "ttft_s": _percentiles([v for r in many for v in r["ttft_s"]]),
            "single_ttft_s": statistics.median(r["ttft_s"][0] for r in one),
            "kv_pool": many[-1]["kv_pool"], "single_kv_pool": one[-1]["kv_pool"],
            "ids_identical_to_single": all(ids == reference for r in many for ids in r["token_ids"]),
            "peak_rss_mb": peak_rss_mb()}


def run_shared_prompt_bench(lm, prompt_ids: list[int], new_tokens: int, n: int, repeat: int, ignore_eos: bool,
                            warmup: int = 1) -> dict:
    """`repeat` rounds (after `warmup`) of: n samples in one call, one sample, n separate one-sample calls."""
    settings = {"max_new_tokens": new_tokens, "ignore_eos": ignore_eos, "do_sample": True, "seed": 0}
    rows = []
    for i in range(warmup + repeat):
        start = time.perf_counter()
        shared = lm.generate(prompt_ids, n=n, **settings)
        shared_s = time.perf_counter() - start
        single = lm.generate(prompt_ids, n=1, **settings)
        start = time.perf_counter()
        for _ in range(n):
            lm.generate(prompt_ids, n=1, **settings)
        separate_s = time.perf_counter() - start
        if i >= warmup:
            rows.append({"shared_total_s": shared_s, "separate_total_s": separate_s,
                         "shared_ttft_s": max(r.stats.ttft_s for r in shared), "single_ttft_s": single.stats.ttft_s})
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    return {"backend": lm.backend.name, "inference_precision": lm.backend.inference_precision,
            "prompt_tokens": len(prompt_ids), "new_tokens": new_tokens, "n": n, "repeat": repeat, **med,
            "ttft_ratio": med["shared_ttft_s"] / med["single_ttft_s"],
            "total_ratio": med["shared_total_s"] / med["separate_total_s"], "runs": rows,
            "peak_rss_mb": peak_rss_mb()}


def format_concurrency(report: dict) -> str:
    """One paragraph of the --concurrency report."""
    r, ttft, pool = report, report["ttft_s"], report["kv_pool"]
    ms = {key: value * 1e3 for key, value in ttft.items()}
    budget = f" of a {pool['kv_positions_budget']}-position pool" if pool["kv_positions_budget"] else ""
    return (f"{r['concurrency']} requests together: aggregate decode {r['aggregate_decode_tokens_per_s']:.1f} "
            f"tokens/s vs {r['single_decode_tokens_per_s']:.1f} alone ({r['speedup_vs_one']:.2f}x); per request "
            f"{r['per_request_decode_tokens_per_s_median']:.1f} tokens/s; TTFT p50 {ms['p50']:.0f} p90 {ms['p90']:.0f} "
            f"p99 {ms['p99']:.0f} ms (alone {r['single_ttft_s'] * 1e3:.0f}); KV peak in use "
            f"{(pool['peak_bytes_in_use'] or 0) / 2**20:.1f} MB, buffers {pool['peak_bytes_allocated'] / 2**20:.1f} MB"
            f"{budget}; ids identical to one alone: {r['ids_identical_to_single']}; peak RSS {r['peak_rss_mb']:.0f} MB "
            f"(medians of {r['repeat']} alternating runs)")


def format_shared_prompt(report: dict) -> str:
    """One paragraph of the --n report."""
    return (f"n={report['n']} samples of a {report['prompt_tokens']}-token prompt in one call: "
            f"{report['shared_total_s']:.2f} s vs {report['separate_total_s']:.2f} s for {report['n']} separate calls "
            f"({report['total_ratio']:.2f}x); TTFT {report['shared_ttft_s'] * 1e3:.0f} ms vs "
            f"{report['single_ttft_s'] * 1e3:.0f} ms for one ({report['ttft_ratio']:.2f}x) "
            f"(medians of {report['repeat']} rounds)")
