"""The command line's many-sequences options: `generate --n/--best-of/--vote/--num-beams/--logprobs`,
`bench --concurrency/--n` and the `answers` subcommand (docs/BATCHING.md)."""

import sys
from pathlib import Path

from .cli_checks import finite_float, non_negative_int, positive_int, print_json, thread_count
from .errors import LuodiError
from .paths import configs_dir

EARLY_STOPPING = {"true": True, "false": False, "never": "never"}


def add_test_time(p) -> None:
    """generate's test-time compute options."""
    g = p.add_argument_group("test-time compute (one prompt, its prefill run once; docs/BATCHING.md)")
    g.add_argument("--n", type=positive_int, default=1, help="N sampled completions")
    g.add_argument("--best-of", type=positive_int, help="N samples, the one of highest mean log-probability")
    g.add_argument("--vote", type=positive_int, help="N samples, the majority answer (self-consistency)")
    g.add_argument("--num-beams", type=positive_int, default=1, help="beam search (as transformers' num_beams)")
    g.add_argument("--length-penalty", type=finite_float, default=1.0, help="beam score = log-prob / length**this")
    g.add_argument("--early-stopping", choices=list(EARLY_STOPPING), default="false",
                   help="beam search's stop rule, as transformers' early_stopping")
    g.add_argument("--logprobs", type=non_negative_int, default=0, help="log-probabilities and K alternatives")


def add_batching_bench(p) -> None:
    """bench's many-sequences options."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--concurrency", type=positive_int, help="C requests arriving together (continuous batching) "
                   "against one, side by side: aggregate decode tokens/s, TTFT percentiles, KV pool memory")
    g.add_argument("--n", type=positive_int, help="N samples of the prompt in one call (one prefill) against one "
                   "sample (TTFT) and N separate calls (total time)")
    p.add_argument("--kv-pool-positions", type=positive_int, help="with --concurrency: the KV pool's size in "
                   "positions over all sequences (default: no limit but the rows); requests that do not fit wait")


def generate_test_time(args, lm, prompt, kwargs: dict) -> int | None:
    """Run and print generate's test-time compute, if any was asked for (None: plain generation)."""
    options = {"n": args.n, "best_of": args.best_of, "vote": args.vote, "num_beams": args.num_beams,
               "length_penalty": args.length_penalty, "early_stopping": EARLY_STOPPING[args.early_stopping],
               "logprobs": args.logprobs}
    if not (args.n != 1 or args.best_of or args.vote or args.num_beams != 1 or args.logprobs):
        return None
    results = lm.generate(prompt, **kwargs, **options)
    results = results if isinstance(results, list) else [results]
    if args.json:
        print_json([r.to_dict() for r in results] if args.n > 1 else results[0].to_dict())
        return 0
    for i, result in enumerate(results):
        print(("" if len(results) == 1 else f"--- completion {i + 1}\n") + result.text)
    if results[0].votes is not None:
        print(f"[answer {results[0].answer!r}; votes {results[0].votes}]", file=sys.stderr)
    if results[0].score is not None:
        print(f"[score {results[0].score:.4f}]", file=sys.stderr)
    return 0


def bench_batching(args, lm, prompts: list[list[int]], new_tokens: int, ignore_eos: bool) -> list[dict]:
    """bench --concurrency / --n (luodi/bench_batching.py): one report per prompt, printed and returned."""
    from .bench_batching import (format_concurrency, format_shared_prompt, run_concurrency_bench,
                                 run_shared_prompt_bench)

    if args.speculate:
        raise LuodiError("--speculate is measured on its own, not with --concurrency or --n")
    if args.kv_pool_positions and not args.concurrency:
        raise LuodiError("--kv-pool-positions sizes the pool of --concurrency")
    reports = []
    for ids in prompts:
        if args.concurrency:
            report = run_concurrency_bench(lm, ids, new_tokens, args.concurrency, args.repeat, ignore_eos,
                                           kv_positions=args.kv_pool_positions)
        else:
            report = run_shared_prompt_bench(lm, ids, new_tokens, args.n, args.repeat, ignore_eos)
        report |= {"model": str(args.model), "threads": args.threads}
        reports.append(report)
        if args.json:
            print_json(report)
        else:
            print(f"{args.model} [{report['backend']}, {args.threads} threads]: " +
                  (format_concurrency(report) if args.concurrency else format_shared_prompt(report)))
    return reports


def add_parsers(sub) -> None:
    """Add `answers` to the `luodi` subparsers."""
    p = sub.add_parser("answers", help="accuracy of greedy, vote=N and best_of=N on questions with known answers")
    p.add_argument("model", help="export folder")
    p.add_argument("--questions", type=Path, default=configs_dir() / "questions" / "arithmetic.yaml",
                   help="questions file (default configs/questions/arithmetic.yaml)")
    p.add_argument("--samples", type=positive_int, default=8, help="N of vote=N and best_of=N")
    p.add_argument("--temperature", type=finite_float, default=0.7)
    p.add_argument("--max-new-tokens", type=positive_int, default=128)
    p.add_argument("--threads", type=thread_count)
    p.add_argument("--json", action="store_true")


def cmd_answers(args) -> int:
    """Print the accuracies of greedy, vote and best-of on a questions file."""
    import luodi

    from .answer_accuracy import answer_accuracy

    report = answer_accuracy(luodi.load(args.model, threads=args.threads), args.questions, args.samples,
                             args.temperature, args.max_new_tokens)
    if args.json:
        print_json(report)
    else:
        print(f"{len(report['questions'])} questions ({args.questions}): greedy {report['greedy_accuracy']:.0%}, "
              f"vote={args.samples} {report['vote_accuracy']:.0%}, best_of={args.samples} "
              f"{report['best_of_accuracy']:.0%} (temperature {args.temperature})")
    return 0


HANDLERS = {"answers": cmd_answers}
