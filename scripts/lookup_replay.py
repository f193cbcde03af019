"""Replay prompt lookup over recorded greedy outputs: drafting policies compared without timing noise.

Greedy speculative output is plain greedy's, so a prompt's steps follow from its plain output alone: each
step the drafter proposes from the text so far, the target keeps the longest prefix that matches the
recorded output and adds its own token. This replays luodi's PromptLookup and DraftLength over a prompt
file's outputs with a step-cost model (one position = 1, each further position --per-position), and prints
the modelled speed-up per prompt beside an oracle's: the best any copy-from-the-context drafter could do
(each step drafts the longest continuation of the output that occurs anywhere in the context, nothing wasted).
On SmolLM2's grounded prompts the replay matched the measured per-prompt speed-ups within ~0.1.
usage: python scripts/lookup_replay.py EXPORT_DIR PROMPTS.txt [--per-position 0.07] [--max-new-tokens 128]
"""

import argparse
import statistics

import luodi
from luodi.runtimes.drafters import PromptLookup
from luodi.runtimes.speculative import MAX_DRAFT_TOKENS, DraftLength


def replay(prompt: list[int], out: list[int], classes, per_position: float, budget: int) -> float:
    """The modelled speed-up of luodi's prompt lookup over plain decoding on one recorded output."""
    lookup, length = PromptLookup(classes=classes), DraftLength(MAX_DRAFT_TOKENS, 0.0)
    context, emitted, cost = list(prompt) + out[:1], 1, 0.0
    while emitted < len(out):
        room = min(MAX_DRAFT_TOKENS, budget - emitted - 1)
        draft = lookup.look(context, room) if room > 0 else None
        tokens = draft.tokens[:length.next(room, draft.kind, free=True)] if draft and draft.tokens else []
        truth = out[emitted:]
        accepted = 0
        while accepted < min(len(tokens), len(truth) - 1) and tokens[accepted] == truth[accepted]:
            accepted += 1
        step = 1 + per_position * len(tokens)
        length.time_step(1 + len(tokens), step)
        cost += step
        if tokens:
            length.update(len(tokens), accepted, draft.kind)
        context += truth[:accepted + 1]
        emitted += accepted + 1
    return (len(out) - 1) / cost


def oracle(prompt: list[int], out: list[int], per_position: float, budget: int) -> float:
    """The modelled speed-up when every step drafts the longest continuation found anywhere in the context."""
    context, emitted, cost = list(prompt) + out[:1], 1, 0.0
    while emitted < len(out):
        truth = out[emitted:]
        room = min(MAX_DRAFT_TOKENS, budget - emitted - 1, len(truth) - 1)
        best = next((n for n in range(room, 0, -1)
                     if any(context[i:i + n] == truth[:n] for i in range(len(context) - n + 1))), 0)
        cost += 1 + per_position * best
        context += truth[:best + 1]
        emitted += best + 1
    return (len(out) - 1) / cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export")
    parser.add_argument("prompts")
    parser.add_argument("--per-position", type=float, default=0.07, help="a further verified position's cost")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    lm = luodi.load(args.export)
    rows = []
    for text in open(args.prompts).read().splitlines():
        prompt = lm.tokenizer.encode_chat([{"role": "user", "content": text}])
        out = lm.generate(prompt, max_new_tokens=args.max_new_tokens).token_ids
        rows.append((len(out), replay(prompt, out, lm.tokenizer.word_classes, args.per_position, args.max_new_tokens),
                     oracle(prompt, out, args.per_position, args.max_new_tokens)))
    print("prompt  new  lookup  oracle")
    for index, (new, modelled, best) in enumerate(rows):
        print(f"{index:6d} {new:4d} {modelled:6.2f}x {best:6.2f}x")
    medians = [statistics.median(row[column] for row in rows) for column in (1, 2)]
    print(f"median: lookup {medians[0]:.2f}x, oracle {medians[1]:.2f}x")


if __name__ == "__main__":
    main()
