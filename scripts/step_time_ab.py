"""Per-step decode time of ONNX graphs with a shared-buffer KV cache, driven by one plain ONNX Runtime loop.

Separates a graph's cost from its runtime's: each graph gets the same prompt (37 tokens), then 60 decode
steps of each --positions length (1: plain decoding; 2-8: a speculative verifying step) with IO binding, the
KV buffers bound as both past and present. Graphs alternate for --rounds rounds.
Usage: scripts/step_time_ab.py MODEL.onnx[:noposition] ... [--rounds 2] [--threads 2] [--head-dim 64]
[--positions 1,2,4,8] (`:noposition` for graphs without a position_ids input, e.g. onnxruntime-genai's).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from luodi.manifest import read_manifest
from luodi.contract.graph import INPUTS_EMBEDS
from luodi.runtimes.embedding_table import EmbeddingTable


def step_ms(path: str, has_positions: bool, threads: int, head_dim: int, positions: int, steps: int = 60) -> float:
    """Median ms of one decode step of `positions` tokens of the graph at `path` (KV buffers [1, heads,
    capacity, head_dim]; the graph's own head size when its input says it)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    pasts = [i for i in session.get_inputs() if i.name.startswith("past")]
    # a graph that takes the token rows (embedding_input) gets them as luodi's runtime reads them
    names, folder = {i.name for i in session.get_inputs()}, Path(path).parent
    embed = EmbeddingTable.for_graph(names, folder, read_manifest(folder).get("embedding_table")
                                     if INPUTS_EMBEDS in names else None)
    prompt = 37
    capacity = prompt + positions * (steps + 1)
    shapes = [(1, p.shape[1], capacity, p.shape[3] if isinstance(p.shape[3], int) else head_dim) for p in pasts]
    buffers = [ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32)) for shape in shapes]
    times, total = [], 0
    for step in range(steps + 1):
        ids = np.arange(10, 10 + prompt, dtype=np.int64)[None] if step == 0 else np.full((1, positions), 100)
        total += ids.shape[1]
        binding = session.io_binding()
        if embed is None:
            binding.bind_cpu_input("input_ids", ids)
        else:
            binding.bind_cpu_input(INPUTS_EMBEDS, embed(ids))
        binding.bind_cpu_input("attention_mask", np.ones((1, total), np.int64))
        if has_positions:
            binding.bind_cpu_input("position_ids", np.arange(total - ids.shape[1], total, dtype=np.int64)[None])
        binding.bind_output("logits", "cpu")
        for past, buffer in zip(pasts, buffers):
            binding.bind_ortvalue_input(past.name, buffer)
            binding.bind_ortvalue_output(past.name.replace("past_key_values", "present"), buffer)
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64, help="for graphs whose KV inputs leave it symbolic")
    parser.add_argument("--positions", default="1", help="comma-separated step lengths to time, e.g. 1,2,4,8")
    args = parser.parse_args()
    lengths = [int(n) for n in args.positions.split(",")]
    for _ in range(args.rounds):
        for model in args.models:
            path, _, flag = model.partition(":")
            ms = [step_ms(path, flag != "noposition", args.threads, args.head_dim, n) for n in lengths]
            print(f"{path}: " + ", ".join(f"{n} pos {t:.2f} ms" for n, t in zip(lengths, ms)))


if __name__ == "__main__":
    main()
