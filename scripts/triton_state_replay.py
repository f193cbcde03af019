"""Replay Triton's implicit-state protocol on a `luodi triton` raw model with ONNX Runtime, and compare with luodi.

usage: python scripts/triton_state_replay.py REPO/NAME_raw EXPORT_DIR [--prompt TEXT] [--tokens N] [--threads T]

Each request's state outputs become the next request's state inputs, starting from the config's zero initial
state, as Triton's sequence batcher does; prints whether the greedy ids equal luodi's and the median decode
step time (what serving the raw graph costs per token before Triton's own overhead).
"""

import argparse
import time

import numpy as np
import onnxruntime as ort
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import luodi


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("raw_model", help="the _raw model folder of a luodi triton repository")
    ap.add_argument("export", help="the export folder (or bundle) it came from")
    ap.add_argument("--prompt", default="Name three rivers in Europe.")
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    config = text_format.Parse(open(f"{args.raw_model}/config.pbtxt").read(), model_config_pb2.ModelConfig())
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(f"{args.raw_model}/1/model.onnx", options)
    lm = luodi.load(args.export, threads=args.threads)
    prompt = lm.tokenizer.encode_chat([{"role": "user", "content": args.prompt}])
    expected = lm.generate(prompt, max_new_tokens=args.tokens, ignore_eos=True).token_ids
    states = config.sequence_batching.state
    state = {s.input_name: np.zeros(tuple(s.initial_state[0].dims), np.float32) for s in states}
    ids, tokens, past, times = prompt, [], 0, []
    for _ in range(args.tokens):
        feeds = {"input_ids": np.array([ids]), "attention_mask": np.ones((1, past + len(ids)), np.int64),
                 "position_ids": np.arange(past, past + len(ids))[None]}
        start = time.perf_counter()
        logits, *present = session.run(["logits", *(s.output_name for s in states)], feeds | state)
        times.append(time.perf_counter() - start)
        state = {s.input_name: value for s, value in zip(states, present)}
        past += len(ids)
        ids = [int(logits[0, -1].argmax())]
        tokens.append(ids[0])
    print(f"prompt {len(prompt)} tokens, {args.tokens} greedy tokens; identical to luodi: {tokens == expected}; "
          f"median decode step {1000 * float(np.median(times[1:])):.1f} ms")


if __name__ == "__main__":
    main()
