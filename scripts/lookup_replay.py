"""Replay prompt lookup over recorded greedy outputs: drafting policies and step costs compared without timing noise.

Greedy speculative output is plain greedy's, so a prompt's steps follow from its plain output alone: each
step the drafter proposes from the text so far, the target keeps the longest prefix that matches the
recorded output and adds its own token. This replays luodi's PromptLookup and DraftLength over a prompt
file's outputs with a step-cost model, and prints the modelled speed-up per prompt beside an oracle's: the best
any copy-from-the-context drafter could do (each step drafts the longest continuation of the output that occurs
anywhere in the context, nothing wasted). On SmolLM2's grounded prompts the replay matched the measured
per-prompt speed-ups within ~0.1.
The step cost of 1..8 positions, in plain one-token steps, is 1 + --per-position per further position, or the
--costs given (e.g. measured by scripts/step_time_ab.py, or the floor of scripts/kernel_floor.py: a plain step
plus how much the weight products alone grow). --branches B also verifies, in the same step, up to B - 1 other
continuations (other occurrences of the text's matching suffixes, each with another first token, up to
--branch-tokens each, within the step's positions): what checking several candidates at once (tree attention)
could gain, an estimate that charges every verified position.
usage: python scripts/lookup_replay.py EXPORT_DIR PROMPTS.txt [--per-position 0.07 | --costs 1,1.07,...]
       [--branches 1] [--branch-tokens 2] [--max-new-tokens 128]
"""

import argparse
import statistics

import numpy as np

import luodi
from luodi.runtimes.drafters import PromptLookup
from luodi.runtimes.speculative import MAX_DRAFT_TOKENS, DraftLength


def other_continuations(lookup: PromptLookup, context: list[int], room: int):
    """Every continuation of every earlier occurrence of the context's suffixes, longest suffix first, latest first."""
    tokens = np.asarray(context)
    for n, starts in lookup.matches(tokens):
        for start in starts[::-1]:
            yield tokens[start + n:start + n + room].tolist()


def branches_for(lookup, context: list[int], tokens: list[int], room: int, count: int, each: int) -> list[list[int]]:
    """The step's drafts: luodi's, then up to count - 1 others starting with other tokens, within room positions."""
    tree, used = [tokens], len(tokens)
    for other in other_continuations(lookup, context, room):
        if len(tree) >= count or used >= room:
            break
        if other and all(other[0] != branch[0] for branch in tree):
            tree.append(other[:min(each, room - used)])
            used += len(tree[-1])
    return tree


def replay(prompt: list[int], out: list[int], classes, costs: list[float], budget: int,
           branches: int = 1, branch_tokens: int = 2) -> float:
    """The modelled speed-up of luodi's prompt lookup over plain decoding on one recorded output."""
    if len(out) < 2:
        return 1.0
    lookup, length = PromptLookup(classes=classes), DraftLength(MAX_DRAFT_TOKENS, 0.0)
    context, emitted, cost = list(prompt) + out[:1], 1, 0.0
    while emitted < len(out):
        room = min(MAX_DRAFT_TOKENS, budget - emitted - 1)
        draft = lookup.look(context, room) if room > 0 else None
        tokens = draft.tokens[:length.next(room, draft.kind, free=True)] if draft and draft.tokens else []
        tree = branches_for(lookup, context, tokens, room, branches, branch_tokens) if tokens else []
        truth = out[emitted:]
        kept = [0]
        for branch in tree:
            accepted = 0
            while accepted < min(len(branch), len(truth) - 1) and branch[accepted] == truth[accepted]:
                accepted += 1
            kept.append(accepted)
        step = costs[sum(len(branch) for branch in tree)]
        length.time_step(1 + len(tokens), step)
        cost += step
        if tokens:
            length.update(len(tokens), kept[1], draft.kind)
        context += truth[:max(kept) + 1]
        emitted += max(kept) + 1
    return (len(out) - 1) / cost


def oracle(prompt: list[int], out: list[int], costs: list[float], budget: int) -> float:
    """The modelled speed-up when every step drafts the longest continuation found anywhere in the context."""
    if len(out) < 2:
        return 1.0
    context, emitted, cost = list(prompt) + out[:1], 1, 0.0
    while emitted < len(out):
        truth = out[emitted:]
        room = min(MAX_DRAFT_TOKENS, budget - emitted - 1, len(truth) - 1)
        best = next((n for n in range(room, 0, -1)
                     if any(context[i:i + n] == truth[:n] for i in range(len(context) - n + 1))), 0)
        cost += costs[best]
        context += truth[:best + 1]
        emitted += best + 1
    return (len(out) - 1) / cost


def step_costs(args) -> list[float]:
    """A step's cost by its drafts (0..MAX_DRAFT_TOKENS), in plain one-token steps."""
    if args.costs is None:
        return [1 + args.per_position * k for k in range(MAX_DRAFT_TOKENS + 1)]
    costs = [float(c) for c in args.costs.split(",")]
    if len(costs) != MAX_DRAFT_TOKENS + 1:
        raise SystemExit(f"--costs needs {MAX_DRAFT_TOKENS + 1} values (steps of 1..{MAX_DRAFT_TOKENS + 1} positions)")
    return [c / costs[0] for c in costs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export")
    parser.add_argument("prompts")
    parser.add_argument("--per-position", type=float, default=0.07, help="a further verified position's cost")
    parser.add_argument("--costs", help="comma-separated costs (or ms) of steps of 1..8 positions")
    parser.add_argument("--branches", type=int, default=1, help="candidate continuations verified per step")
    parser.add_argument("--branch-tokens", type=int, default=2, help="tokens of each further candidate")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    costs = step_costs(args)
    lm = luodi.load(args.export)
    rows = []
    for text in open(args.prompts).read().splitlines():
        prompt = lm.tokenizer.encode_chat([{"role": "user", "content": text}])
        out = lm.generate(prompt, max_new_tokens=args.max_new_tokens).token_ids
        rows.append((len(out), replay(prompt, out, lm.tokenizer.word_classes, costs, args.max_new_tokens,
                                      args.branches, args.branch_tokens),
                     oracle(prompt, out, costs, args.max_new_tokens)))
    print("prompt  new  lookup  oracle")
    for index, (new, modelled, best) in enumerate(rows):
        print(f"{index:6d} {new:4d} {modelled:6.2f}x {best:6.2f}x")
    medians = [statistics.median(row[column] for row in rows) for column in (1, 2)]
    totals = [sum(row[0] - 1 for row in rows) / sum((row[0] - 1) / row[column] for row in rows) for column in (1, 2)]
    print(f"median: lookup {medians[0]:.2f}x, oracle {medians[1]:.2f}x; "
          f"total decode time: lookup {totals[0]:.2f}x, oracle {totals[1]:.2f}x")


if __name__ == "__main__":
    main()
