"""luodi tune's report: report.json (every candidate's settings, numbers and verdict) and report.md (the same as
a table, with how it was measured and how to run the choice), both written atomically into the tune folder."""

import json
from pathlib import Path

from ..fileio import write_text_atomic

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def _num(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def run_command(chosen: dict, best: Path, draft: Path | None) -> str:
    """The command that runs the chosen configuration from the written output."""
    parts = ["luodi generate", str(best), f"--threads {chosen['threads']}"]
    if chosen["inference_precision"] not in (None, "f32"):
        parts.append(f"--inference-precision {chosen['inference_precision']}")
    if draft is not None:
        parts.append(f"--speculate {draft}")
    return " ".join(parts) + ' --chat --prompt "..."'


def _markdown(report: dict) -> str:
    p = report["protocol"]
    lines = [f"# luodi tune {report['model']}", "",
             f"Quality budget: perplexity within {report['budget_pct']:g}% of the fp32 reference "
             f"({report['reference']['build']}: {_num(report['reference']['perplexity'], '.3f')} on {p['quality_text']}, first "
             f"{p['quality_tokens']} tokens in windows of {p['quality_window']}, through each export's own runtime).",
             f"Speed ({report['workload']}): " + "; ".join(
                 f"{kind} = {w}" for kind, w in p["workloads"].items()) +
             f"; medians of {p['repeat']} runs after a warm-up, greedy, EOS suppressed. Score = each speed relative to "
             "the best candidate's (1 = best), geometric mean over the measured workloads.",
             f"Elapsed {report['elapsed_s'] / 60:.1f} min" + (" (stopped by --budget-minutes: some candidates were "
                                                              "not measured)" if report["stopped_by_time_budget"]
                                                              else "") + ".", ""]
    if report["chosen"]:
        lines += [f"**Chosen: {report['chosen']}** → `{report['output']}`", "", f"Run it: `{report['run']}`", ""]
    else:
        lines += [f"**Nothing chosen**: {report['error']}", ""]
    lines += ["| configuration | inference precision | threads | speculation | perplexity | loss vs fp32 | "
              "W1 decode tok/s | W2 TTFT ms | score | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["candidates"]:
        loss = None if r["quality_loss_pct"] is None else f"{r['quality_loss_pct']:+.2f}%"
        lines.append(" | ".join(["", r["configuration"], r["inference_precision"] or "—", str(r["threads"]),
                                 f"draft {r['speculation']}" if r["speculation"] else "off",
                                 _num(r["perplexity"], ".3f"), loss or "—", _num(r["chat_decode_tokens_per_s"], ".1f"),
                                 _num(r["long_prompt_ttft_ms"], ".1f"), _num(r["score"], ".3f"),
                                 ("**" + r["verdict"] + "**") if r["id"] == report["chosen"] else r["verdict"], ""]).strip())
    lines += ["", "Speculative rows keep their target's quality: greedy output is identical to plain decoding. "
              "Timings on a busy machine mean little: rerun the tune on an idle one.",
              "", f"Plot: {report['plot']}", ""]
    return "\n".join(lines)


def write_report(folder: Path, report: dict) -> tuple[Path, Path]:
    """Write report.json and report.md into the tune folder; their paths."""
    folder = Path(folder)
    write_text_atomic(folder / REPORT_JSON, json.dumps(report, indent=1, allow_nan=False) + "\n")
    write_text_atomic(folder / REPORT_MD, _markdown(report))
    return folder / REPORT_JSON, folder / REPORT_MD
