"""The `luodi ceiling` and `luodi greedy-check` subcommands: their arguments and handlers (cli.py registers them)."""

from pathlib import Path

from .cli_checks import non_negative_int, positive_float, positive_int, print_json, thread_count


def _speeds(text: str) -> list[float]:
    """An argparse type for comma-separated decode speeds (tokens/s)."""
    return [positive_float(part) for part in text.split(",")]


def add_parsers(sub) -> None:
    """Add `ceiling` and `greedy-check` to the `luodi` subparsers."""
    p = sub.add_parser("ceiling", help="the machine's read bandwidth and the decode tokens/s it allows an export")
    p.add_argument("model", type=Path, help="export folder")
    p.add_argument("--threads", type=thread_count, default=2)
    p.add_argument("--repeat", type=positive_int, default=15, help="timed sums of a 1 GiB buffer (median taken)")
    p.add_argument("--measured", type=_speeds, default=[], metavar="TOK/S,...",
                   help="decode speeds (e.g. from luodi bench and the anchor kit) to state as shares of the ceiling")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("greedy-check", help="greedy token ids of an export against transformers fp32, per prompt")
    p.add_argument("model", help="export folder")
    p.add_argument("--prompts", type=Path, required=True, help="prompts, one per line")
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    p.add_argument("--max-new-tokens", type=non_negative_int, default=64)
    p.add_argument("--logits", action="store_true",
                   help="also the max |logit diff| vs transformers over the prompt and the new tokens")
    p.add_argument("--source", help="the model transformers runs (default the export manifest's source)")
    p.add_argument("--backend", choices=["ort", "openvino", "tensorrt"],
                   help="runtime (default the export's; --backend ort runs a trt export's graph on ONNX Runtime)")
    p.add_argument("--threads", type=thread_count)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--num-beams", type=positive_int, default=1,
                      help="beam search on both sides (transformers' num_beams, its default length penalty)")
    mode.add_argument("--joined", action="store_true",
                      help="run the prompts together through the scheduler, each joining a few steps after the last")
    p.add_argument("--json", action="store_true")


def cmd_ceiling(args) -> int:
    """Print the decode ceiling of an export on this machine."""
    from .ceiling import ceiling_report, format_ceiling

    report = ceiling_report(args.model, args.threads, args.repeat, args.measured)
    print_json(report) if args.json else print(format_ceiling(report))
    return 0


def cmd_greedy_check(args) -> int:
    """Print per prompt whether the export's greedy ids equal transformers'; exit 1 if any differs."""
    import luodi

    from .greedy_check import format_greedy_check, greedy_check
    from .inputs import read_prompts
    from .manifest import read_manifest

    source = args.source or read_manifest(args.model).source.name
    lm = luodi.load(args.model, backend=args.backend, threads=args.threads)
    rows = greedy_check(lm, source, read_prompts(args.prompts), args.max_new_tokens, args.chat, args.logits,
                        args.num_beams, args.joined)
    print_json({"model": args.model, "source": source, "prompts": rows}) if args.json else print(
        format_greedy_check(rows))
    return 0 if all(r["identical"] for r in rows) else 1


HANDLERS = {"ceiling": cmd_ceiling, "greedy-check": cmd_greedy_check}
