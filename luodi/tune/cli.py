"""The `luodi tune` subcommand: its arguments and handler (luodi/cli.py registers them; docs/TUNE.md)."""

import argparse
from pathlib import Path

from ..cli_checks import fraction_or_percent, out_path, positive_int, print_json, thread_count

WORKLOADS = ("chat", "long-prompt", "both")


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"--budget-minutes must be at least 0, got {text!r}")
    return value


def _threads(text: str) -> list[int]:
    return [thread_count(part) for part in text.split(",")]


def add_parser(sub) -> None:
    """Add `tune` to the `luodi` subparsers."""
    p = sub.add_parser("tune", help="export and measure candidate configurations; keep the fastest within a quality "
                                    "budget (docs/TUNE.md)")
    p.add_argument("model", help="model folder, .gguf or registry name")
    p.add_argument("--targets", type=lambda s: [t for t in s.split(",") if t],
                   help="targets to try, comma-separated (default every target the candidates file uses)")
    p.add_argument("--max-quality-loss", type=fraction_or_percent, default=0.03, metavar="PCT",
                   help="largest perplexity increase over fp32 on held-out text, e.g. 3%% (default 3%%)")
    p.add_argument("--workload", choices=WORKLOADS, default="both",
                   help="what speed means: chat = W1 decode tokens/s, long-prompt = W2 TTFT, both (default)")
    p.add_argument("--budget-minutes", type=_minutes, metavar="M",
                   help="start no new candidate after M minutes; report what was measured")
    p.add_argument("--out", type=out_path, help="tune folder (default build/<model>-tune); a rerun resumes it")
    p.add_argument("--threads", type=_threads, metavar="N[,N...]", help="thread counts to try (default the "
                                                                        "candidates file's: 1 and all CPUs)")
    p.add_argument("--bundle", action="store_true", help="write the choice as a bundle (best.tar), not a folder")
    p.add_argument("--candidates", type=Path, metavar="FILE.yaml", help="candidate list (default configs/tune.yaml)")
    p.add_argument("--repeat", type=positive_int, help="timed runs per workload (default the candidates file's)")
    p.add_argument("--eval-tokens", type=positive_int, help="held-out tokens scored (default the candidates file's)")
    p.add_argument("--json", action="store_true", help="print report.json's content, no progress bar")


def cmd_tune(args) -> int:
    """Run luodi tune and print the choice."""
    from .candidates import load_plan
    from .pipeline import run_tune

    plan = load_plan(args.candidates, args.targets, args.threads, args.workload, args.repeat, args.eval_tokens)
    out = args.out or Path("build") / f"{Path(args.model).stem}-tune"
    report = run_tune(args.model, plan, out, 100 * args.max_quality_loss, args.budget_minutes, args.bundle,
                      progress=not args.json)
    if args.json:
        print_json(report)
        return 0
    measured = sum(r["status"] == "measured" for r in report["candidates"])
    print(f"luodi tune {args.model}: {measured} of {len(report['candidates'])} configurations measured; chosen "
          f"{report['chosen']} -> {report['output']}\nreport: {out / 'report.md'} (and report.json, tune.png)\n"
          f"run it: {report['run']}")
    return 0


HANDLERS = {"tune": cmd_tune}
