"""The `luodi compress` subcommand: its arguments and handler (luodi/cli.py registers them)."""

import argparse
from pathlib import Path

from ..cli_checks import non_negative_int, out_path, positive_float, positive_int, print_json


def _fraction(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"a fraction of the original's parameters below 1, got {text!r}")
    return value


def _rank(text: str) -> float:
    from ..errors import LuodiError
    from .low_rank import parse_rank

    try:
        return parse_rank(text)
    except LuodiError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(sub) -> None:
    """Add `compress` to the `luodi` subparsers."""
    p = sub.add_parser("compress", help="prune (blocks, heads, MLP, hidden width) and distill a model into a "
                                        "smaller Hugging Face folder (docs/COMPRESSION.md)")
    p.add_argument("model", help="model folder, .gguf or registry name")
    p.add_argument("--out", type=out_path, required=True, help="output folder (a Hugging Face model folder)")
    p.add_argument("--force", action="store_true", help="replace an earlier luodi compress output there (nothing else)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--params", type=_fraction, metavar="FRACTION", help="keep this share of the parameters")
    size.add_argument("--size-budget", type=positive_float, metavar="MB", help="fp32 model files of at most MB")
    p.add_argument("--prune", default="auto", help="axes, comma-separated: depth, heads, mlp, hidden; auto = "
                                                   "mlp,depth (default)")
    p.add_argument("--low-rank", type=_rank, metavar="RANK_OR_FRACTION",
                   help="factor each block projection into two thin ones of this rank (or this share of its full "
                        "rank) where that stores fewer numbers; alone it needs no size target")
    p.add_argument("--calib-tokens", type=positive_int, default=4096,
                   help="calibration tokens for the importance measurements")
    d = p.add_argument_group("distillation from the original model (none unless a budget is given)")
    budget = d.add_mutually_exclusive_group()
    budget.add_argument("--distill-tokens", type=non_negative_int, metavar="N", help="train on N tokens")
    budget.add_argument("--distill-minutes", type=positive_float, metavar="M", help="train for about M minutes")
    d.add_argument("--distill-batch", type=positive_int, default=4, help="sequences per step")
    d.add_argument("--distill-seq", type=positive_int, default=256, help="tokens per sequence")
    d.add_argument("--lr", type=positive_float, default=2e-4, help="peak learning rate (AdamW, warmup + cosine)")
    d.add_argument("--seed", type=non_negative_int, default=0)
    d.add_argument("--autocast", choices=["bf16", "fp32"], help="compute precision of the forward passes (default "
                                                                "bf16 where the CPU has bf16 instructions)")
    d.add_argument("--checkpoint-minutes", type=positive_float, default=5.0, help="checkpoint interval")
    p.add_argument("--json", action="store_true", help="print compression.json's content, no progress bars")


def cmd_compress(args) -> int:
    """Run luodi compress and print what it made."""
    from .distill import DistillSettings, bf16_supported
    from .pipeline import CompressSettings, compress_model

    autocast = args.autocast or ("bf16" if bf16_supported() else "fp32")
    distill = DistillSettings(tokens=args.distill_tokens, minutes=args.distill_minutes, batch=args.distill_batch,
                              seq=args.distill_seq, lr=args.lr, seed=args.seed, autocast=autocast,
                              checkpoint_seconds=args.checkpoint_minutes * 60)
    settings = CompressSettings(params=args.params, size_budget_mb=args.size_budget, prune=args.prune,
                                calib_tokens=args.calib_tokens, low_rank=args.low_rank, distill=distill)
    record = compress_model(args.model, Path(args.out), settings, force=args.force, progress=not args.json)
    if args.json:
        print_json(record)
        return 0
    params = record["params"]
    print(f"compressed {args.model} -> {args.out} ({params['compressed']:,} of {params['original']:,} parameters, "
          f"{params['fraction']:.3f}; {record['model_bytes'] / 1e6:.1f} MB; {record['seconds']} s)")
    for stage, texts in record["quality"].items():
        print(f"  {stage:10} " + "; ".join(f"{name} perplexity {q['perplexity']:.3f}"
                                          + (f", KL to original {q['kl_to_teacher']:.4f}" if "kl_to_teacher" in q
                                             else "") for name, q in texts.items()))
    return 0


HANDLERS = {"compress": cmd_compress}
