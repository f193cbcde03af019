"""`luodi bench --plot FILE.png`: what a benchmark measured, as a chart.

- plain runs, one prompt: decode tokens/s and TTFT of every measured run, the median drawn across;
- plain runs, several prompts (--prompts): decode tokens/s and TTFT per prompt, against the prompt's length
  when the prompts differ in length (TTFT grows with it), else per prompt;
- --speculate: plain and speculative decode tokens/s per prompt, side by side;
- --concurrency C: aggregate decode tokens/s of C requests against one alone, and TTFT percentiles;
- --n N: total time of N samples in one call against N calls, and TTFT against one sample.
"""

import sys
from pathlib import Path

from .plotting import pyplot, save_png


def _target(model) -> str | None:
    """The export's target when `model` is an export folder (a bundle archive: None, the runtime is shown)."""
    from .manifest import MANIFEST, read_manifest

    folder = Path(str(model))
    return read_manifest(folder).target if (folder / MANIFEST).is_file() else None


def _title(fig, what: str, model: str, report: dict, threads) -> None:
    target = _target(model)
    runtime = " ".join(filter(None, (target, report["backend"] if target != report["backend"] else None,
                                     report.get("inference_precision"))))
    fig.suptitle(f"{what}: {Path(str(model)).name} [{runtime}, {threads} thread{'' if threads == 1 else 's'}]")


def _bars(ax, labels, values, ylabel: str, title: str, color=None) -> None:
    bars = ax.bar(range(len(values)), values, color=color)
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(values)), labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6
                  else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def _plain(axes, reports: list[dict]) -> None:
    left, right = axes
    if len(reports) == 1:
        r = reports[0]
        runs = [f"run {i + 1}" for i in range(len(r["ttft_s_all"]))]
        _bars(left, runs, r["decode_tokens_per_s_all"], "decode tokens/s", f"decode ({r['new_tokens']} new tokens)")
        _bars(right, runs, [t * 1e3 for t in r["ttft_s_all"]], "TTFT (ms)",
              f"time to first token ({r['prompt_tokens']}-token prompt)", color="tab:orange")
        left.axhline(r["decode_tokens_per_s"], color="k", ls="--", lw=1, label="median")
        right.axhline(r["ttft_s"] * 1e3, color="k", ls="--", lw=1, label="median")
        left.legend(loc="lower right")
        return
    lengths = [r["prompt_tokens"] for r in reports]
    if len(set(lengths)) > 1:
        order = sorted(range(len(reports)), key=lambda i: lengths[i])
        x = [lengths[i] for i in order]
        for ax, key, scale, label, color in ((left, "decode_tokens_per_s", 1, "decode tokens/s", "tab:blue"),
                                             (right, "ttft_s", 1e3, "TTFT (ms)", "tab:orange")):
            ax.plot(x, [reports[i][key] * scale for i in order], "o-", color=color)
            ax.set_xlabel("prompt length (tokens)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        left.set_title("decode speed vs prompt length")
        right.set_title("time to first token vs prompt length")
        return
    labels = [f"prompt {i + 1}" for i in range(len(reports))]
    _bars(left, labels, [r["decode_tokens_per_s"] for r in reports], "decode tokens/s", "decode (median)")
    _bars(right, labels, [r["ttft_s"] * 1e3 for r in reports], "TTFT (ms)", "time to first token (median)",
          color="tab:orange")


def _speculative(axes, report: dict) -> None:
    left, right = axes
    rows = report["prompts"]
    x = range(len(rows))
    width = 0.4
    left.bar([i - width / 2 for i in x], [r["plain_tokens_per_s"] for r in rows], width, label="plain")
    left.bar([i + width / 2 for i in x], [r["speculative_tokens_per_s"] for r in rows], width, label="speculative")
    left.set_xticks(list(x), [f"prompt {i + 1}" for i in x])
    left.set_ylabel("decode tokens/s")
    left.set_title("plain vs speculative decoding (medians)")
    left.legend()
    _bars(right, [f"prompt {i + 1}" for i in x], [r["speedup"] for r in rows], "speed-up (x)",
          f"speed-up (median {report['speedup_median']:.2f}x, total {report['speedup_total']:.2f}x)", color="tab:green")
    right.axhline(1.0, color="k", lw=1)


def _concurrency(axes, reports: list[dict]) -> None:
    left, right = axes
    labels, values = [], []
    for i, r in enumerate(reports):
        tag = f" (prompt {i + 1})" if len(reports) > 1 else ""
        labels += [f"1 alone{tag}", f"{r['concurrency']} together{tag}", f"per request{tag}"]
        values += [r["single_decode_tokens_per_s"], r["aggregate_decode_tokens_per_s"],
                   r["per_request_decode_tokens_per_s_median"]]
    _bars(left, labels, values, "decode tokens/s", "aggregate decode speed")
    labels, values = [], []
    for i, r in enumerate(reports):
        tag = f" (prompt {i + 1})" if len(reports) > 1 else ""
        labels += [f"alone{tag}"] + [f"{p}{tag}" for p in r["ttft_s"]]
        values += [r["single_ttft_s"] * 1e3] + [v * 1e3 for v in r["ttft_s"].values()]
    _bars(right, labels, values, "TTFT (ms)", "time to first token (from arrival)", color="tab:orange")


def _shared_prompt(axes, reports: list[dict]) -> None:
    left, right = axes
    labels, totals, ttfts, ttft_labels = [], [], [], []
    for i, r in enumerate(reports):
        tag = f" (prompt {i + 1})" if len(reports) > 1 else ""
        labels += [f"n={r['n']} in one call{tag}", f"{r['n']} calls{tag}"]
        totals += [r["shared_total_s"], r["separate_total_s"]]
        ttft_labels += [f"n={r['n']}{tag}", f"one sample{tag}"]
        ttfts += [r["shared_ttft_s"] * 1e3, r["single_ttft_s"] * 1e3]
    _bars(left, labels, totals, "total time (s)", "N samples of one prompt")
    _bars(right, ttft_labels, ttfts, "TTFT (ms)", "time to first token", color="tab:orange")


def plot_bench(kind: str, reports: list[dict], model: str, threads, path: Path) -> Path:
    """Write a chart of `luodi bench`'s reports of one kind ("plain", "speculative", "concurrency", "n") to path."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    draw = {"plain": _plain, "concurrency": _concurrency, "n": _shared_prompt}
    if kind == "speculative":
        _speculative(axes, reports[0])
    else:
        draw[kind](axes, reports)
    what = {"plain": "luodi bench", "speculative": "luodi bench --speculate", "concurrency": "luodi bench --concurrency",
            "n": "luodi bench --n"}[kind]
    _title(fig, what, model, reports[0], threads)
    fig.tight_layout()
    return save_png(fig, path)


def plot_if_asked(args, kind: str, reports: list[dict]) -> int:
    """`luodi bench`'s --plot: write the chart when asked; the command's exit code (0)."""
    if args.plot:
        plot_bench(kind, reports, args.model, args.threads, args.plot)
        print(f"plot -> {args.plot}", file=sys.stderr)
    return 0
