"""`luodi ceiling`: the memory-bandwidth ceiling of decode, the machine's read bandwidth over the bytes one decode
step reads.

A decode step of a small model reads every weight once (the embedding table only a row, unless a tied LM head
reads it whole), so tokens/s cannot exceed read bandwidth / bytes per step. The bandwidth is a multi-threaded
sum over a buffer far larger than the caches (torch); the bytes are the export's initializers minus those only
an embedding lookup reads."""

import statistics
import time
from pathlib import Path

from .manifest import read_manifest

LOOKUPS = {"Gather", "GatherBlockQuantized"}  # ops that read a few rows of a table, not all of it


def read_bandwidth(threads: int, repeat: int, gib: float = 1.0) -> tuple[float, float]:
    """(median, best) bytes per second of summing a `gib` GiB float32 buffer on `threads` threads: what decode
    can read per second at most."""
    import torch

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


def _tensor_bytes(tensor) -> int:
    """An initializer's stored size, without loading external data."""
    from onnx.helper import tensor_dtype_to_np_dtype

    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def bytes_per_step(export: Path) -> int:
    """Bytes of weights one decode step reads: an ONNX export's initializers except tables only looked up; an
    OpenVINO IR's weight bytes from its manifest."""
    manifest = read_manifest(export)
    if manifest.backend != "ort":
        return manifest.facts.weight_bytes
    import onnx

    graph = onnx.load(Path(export) / manifest.model_file, load_external_data=False).graph
    readers: dict[str, set] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    return sum(_tensor_bytes(t) for t in graph.initializer if not readers.get(t.name, set()) <= LOOKUPS)


def ceiling_report(export: Path, threads: int, repeat: int, measured: list[float]) -> dict:
    """The bandwidth, the bytes per step, the ceiling in tokens/s (at the median and the best bandwidth) and each
    measured decode speed as a share of the ceiling."""
    median, best = read_bandwidth(threads, repeat)
    step = bytes_per_step(export)
    return {"export": str(export), "threads": threads, "repeat": repeat, "bandwidth_gb_s": median / 1e9,
            "best_bandwidth_gb_s": best / 1e9, "bytes_per_step": step, "ceiling_tokens_per_s": median / step,
            "best_ceiling_tokens_per_s": best / step,
            "measured": [{"tokens_per_s": speed, "share": speed * step / median} for speed in measured]}


def format_ceiling(report: dict) -> str:
    """The ceiling report as the lines `luodi ceiling` prints."""
    lines = [f"read bandwidth, {report['threads']} threads: {report['bandwidth_gb_s']:.1f} GB/s (median of "
             f"{report['repeat']}; best {report['best_bandwidth_gb_s']:.1f})",
             f"{report['export']}: {report['bytes_per_step'] / 1e6:.1f} MB of weights per decode step -> ceiling "
             f"{report['ceiling_tokens_per_s']:.1f} tokens/s ({report['best_ceiling_tokens_per_s']:.1f} at the best "
             "bandwidth)"]
    lines += [f"  {m['tokens_per_s']:.1f} tokens/s = {m['share']:.0%} of the ceiling" for m in report["measured"]]
    return "\n".join(lines)
