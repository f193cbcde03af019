"""The memory-bandwidth ceiling of decode: the machine's read bandwidth over the bytes one decode step reads.

A decode step of a small model reads every weight once (the embedding table only a row, unless a tied LM head
reads it whole), so tokens/s cannot exceed read bandwidth / bytes per step. The bandwidth is a multi-threaded
sum over a buffer far larger than the caches (torch, `--threads` threads), the median of `--repeat` runs; the
bytes are the export's initializers minus those only an embedding lookup reads. `--measured` turns decode
speeds (tokens/s, e.g. luodi's and a baseline's from `luodi bench` / the anchor kit) into shares of the ceiling.
Usage: python scripts/decode_ceiling.py EXPORT_DIR [--threads 2] [--repeat 15] [--measured 36.3,37.0]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import onnx
import torch

LOOKUPS = {"Gather", "GatherBlockQuantized"}  # ops that read a few rows of a table, not all of it


def read_bandwidth(threads: int, repeat: int, gib: float = 1.0) -> tuple[float, float]:
    """(median, best) bytes per second of summing a `gib` GiB float32 buffer on `threads` threads."""
    torch.set_num_threads(threads)
    buffer = torch.ones(int(gib * 2 ** 30) // 4)
    buffer.sum()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        buffer.sum()
        seconds.append(time.perf_counter() - started)
    size = buffer.numel() * 4
    return size / statistics.median(seconds), size / min(seconds)


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    """An initializer's stored size, without loading external data."""
    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def bytes_per_step(export: Path) -> int:
    """Bytes of weights one decode step reads: an ONNX export's initializers except tables only looked up; an
    OpenVINO IR's weight bytes from its manifest."""
    manifest = json.loads((export / "manifest.json").read_text())
    if manifest["backend"] != "ort":
        return manifest["memory"]["weight_bytes"]
    graph = onnx.load(export / manifest["model_file"], load_external_data=False).graph
    readers: dict[str, set] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    return sum(_tensor_bytes(t) for t in graph.initializer if not readers.get(t.name, set()) <= LOOKUPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--measured", default="", help="comma-separated decode tokens/s to express as shares")
    args = parser.parse_args()
    median, best = read_bandwidth(args.threads, args.repeat)
    step = bytes_per_step(args.export)
    ceiling = median / step
    print(f"read bandwidth, {args.threads} threads: {median / 1e9:.1f} GB/s (median of {args.repeat}; best "
          f"{best / 1e9:.1f})")
    print(f"{args.export}: {step / 1e6:.1f} MB of weights per decode step -> ceiling {ceiling:.1f} tokens/s "
          f"({best / step:.1f} at the best bandwidth)")
    for speed in filter(None, args.measured.split(",")):
        print(f"  {float(speed):.1f} tokens/s = {float(speed) / ceiling:.0%} of the ceiling")


if __name__ == "__main__":
    main()
