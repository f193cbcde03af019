"""`luodi bench`: TTFT, decode tokens/s (prefill excluded) and peak RSS, as medians over repeated runs after
a warm-up, with the same protocol as the anchor kit in shared/anchors (greedy, optional EOS suppression)."""

import statistics
import time

_FILLER = ("The history of computing is a story of people who wanted machines to do more with less. "
           "Each generation of hardware brought new constraints, and each constraint new ideas. ")


def synthetic_prompt(tokenizer, n_tokens: int) -> list[int]:
    """A prompt of exactly n_tokens ids, cut from English filler text."""
    repeats = 1
    while len(ids := tokenizer.encode(_FILLER * repeats)) < n_tokens:
        repeats *= 2
    return ids[:n_tokens]


def bench_prompts(args, tokenizer, max_context: int) -> tuple[list[list[int]], int]:
    """(prompt ids, new tokens) of `luodi bench`'s arguments: a workload's (its own new-token count), a synthetic
    prompt of --prompt-tokens, or the text of --prompt, --prompt-file or each line of --prompts (default a short
    question), through the chat template with --chat."""
    from .inputs import read_prompts, read_text_file
    from .workloads import prompt_ids, workload

    if args.workload:
        work = workload(args.workload)
        return [prompt_ids(work, tokenizer)], work.new_tokens
    if args.prompt_tokens:
        return [synthetic_prompt(tokenizer, min(args.prompt_tokens, max_context))], args.new_tokens
    texts = read_prompts(args.prompts) if args.prompts else [
        read_text_file(args.prompt_file, "prompt file") if args.prompt_file else
        args.prompt or "What is the capital of France?"]
    return [tokenizer.encode_chat([{"role": "user", "content": t}]) if args.chat else tokenizer.encode(t)
            for t in texts], args.new_tokens


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MB (2^20 bytes; model load included)."""
    from .process_memory import peak_rss_bytes

    return peak_rss_bytes() / 2**20


def run_bench(lm, prompt_ids: list[int], new_tokens: int, repeat: int, ignore_eos: bool, warmup: int = 1,
              speculate=None) -> dict:
    """Time `repeat` greedy generations of prompt_ids (after `warmup` untimed ones); medians and all values.
    `speculate` as in LanguageModel.generate (luodi tune times its speculative configurations with it)."""
    runs = []
    for i in range(warmup + repeat):
        result = lm.generate(prompt_ids, max_new_tokens=new_tokens, ignore_eos=ignore_eos, speculate=speculate)
        if i >= warmup:
            runs.append(result)
    ttft = [r.stats.ttft_s for r in runs]
    tps = [r.stats.decode_tokens_per_s for r in runs]
    return {"backend": lm.backend.name, "inference_precision": lm.backend.inference_precision,
            "prompt_tokens": len(prompt_ids), "new_tokens": runs[0].stats.new_tokens,
            "repeat": repeat, "ttft_s": statistics.median(ttft), "decode_tokens_per_s": statistics.median(tps),
            "ttft_s_all": ttft, "decode_tokens_per_s_all": tps, "peak_rss_mb": peak_rss_mb(),
            "token_ids": runs[0].token_ids, "ids_identical_across_runs": all(r.token_ids == runs[0].token_ids
                                                                             for r in runs)}


def timed_load(loader):
    """(loaded object, seconds) for a zero-argument loader."""
    t = time.perf_counter()
    obj = loader()
    return obj, time.perf_counter() - t


def run_speculative_bench(lm, prompts_ids: list[list[int]], new_tokens: int, repeat: int, speculate,
                          draft_tokens: int | None = None, ignore_eos: bool = False) -> dict:
    """Plain greedy and speculative greedy side by side: for each prompt, `repeat` alternating pairs of runs after
    one warm-up pair; per prompt the medians of decode tokens/s, their ratio, the speculation stats and whether
    the ids were identical; overall the median ratio and the ratio of total decode times."""
    rows = []
    for ids in prompts_ids:
        runs = {"plain": [], "spec": []}
        for i in range(1 + repeat):
            pair = {"plain": lm.generate(ids, max_new_tokens=new_tokens, ignore_eos=ignore_eos),
                    "spec": lm.generate(ids, max_new_tokens=new_tokens, ignore_eos=ignore_eos, speculate=speculate,
                                        draft_tokens=draft_tokens)}
            for kind, result in pair.items():
                if i:
                    runs[kind].append(result)
        plain, spec = (statistics.median(r.stats.decode_tokens_per_s for r in runs[k]) for k in ("plain", "spec"))
        stats = runs["spec"][0].stats
        rows.append({"prompt_tokens": len(ids), "new_tokens": stats.new_tokens, "plain_tokens_per_s": plain,
                     "speculative_tokens_per_s": spec, "speedup": spec / plain,
                     "identical": all(r.token_ids == runs["plain"][0].token_ids for r in runs["plain"] + runs["spec"]),
                     "acceptance_rate": stats.acceptance_rate, "mean_accepted": stats.mean_accepted,
                     "forwards_per_token": stats.forwards_per_token})
    seconds = {k: sum((r["new_tokens"] - 1) / r[f"{k}_tokens_per_s"] for r in rows) for k in ("plain", "speculative")}
    return {"backend": lm.backend.name, "repeat": repeat, "prompts": rows,
            "speedup_median": statistics.median(r["speedup"] for r in rows),
            "speedup_total": seconds["plain"] / seconds["speculative"],
            "all_identical": all(r["identical"] for r in rows), "peak_rss_mb": peak_rss_mb()}


def format_speculative(report: dict) -> str:
    """The speculative bench report as a table: one line per prompt, then the overall speed-ups."""
    lines = [f"{'prompt':>6} {'new':>4} {'plain tok/s':>11} {'spec tok/s':>10} {'speed-up':>8} {'accept':>6} "
             f"{'fwd/tok':>7} identical"]
    for i, r in enumerate(report["prompts"]):
        lines.append(f"{i:>6} {r['new_tokens']:>4} {r['plain_tokens_per_s']:>11.1f} "
                     f"{r['speculative_tokens_per_s']:>10.1f} {r['speedup']:>7.2f}x {r['acceptance_rate']:>6.2f} "
                     f"{r['forwards_per_token']:>7.2f} {r['identical']}")
    lines.append(f"speed-up: median {report['speedup_median']:.2f}x, total decode time {report['speedup_total']:.2f}x; "
                 f"output identical: {report['all_identical']} ({report['backend']}, {report['threads']} threads, "
                 f"medians of {report['repeat']} alternating runs per prompt)")
    return "\n".join(lines)
