"""The check every export passes before its folder appears: the exported graph under its runtime (ONNX
Runtime for a TensorRT export's ONNX graph) against the transformers model, on a prefill and several decode
steps over the KV cache.

The check is bit-reproducible: both sides run on PARITY_THREADS threads whatever the machine's load or the CPUs
the process may use, and OpenVINO in its exact settings (runtime_libraries.compile_options). Left to themselves,
OpenVINO's CPU plugin and torch each take one thread per CPU the process may use, and a thread count changes the
order of a matrix product's sums: SmolLM2's check gave 5.34e-05 on two CPUs and 5.71e-05 on one (docs/PARITY.md)."""

import contextlib
import hashlib
from pathlib import Path

import numpy as np

from ..contract import Manifest
# the one place a compile-side module opens runtimes: the check runs the export under its runtime (open_backend)
# beside the transformers reference (docs/ARCHITECTURE.md)
from ..runtimes import open_backend
from ..runtimes.torch_ref import TorchReferenceBackend

# threads on each side of the check: OpenVINO caps a thread count at the CPUs the process may use, so one is the
# only count every machine runs as asked (SmolLM2's check: 2.3-2.6 s on one thread, 2.2 s on two)
PARITY_THREADS = 1


def compare_backends(candidate, reference, prompt_ids: list[int], steps: int) -> dict:
    """Max |logit difference| and greedy agreement of two backends over a prefill then `steps` decode steps, and
    a digest of both sides' logits (equal across runs exactly when the comparison is bit-reproducible)."""
    states = candidate.new_state(1), reference.new_state(1)
    ids = np.asarray([prompt_ids], dtype=np.int64)
    mask = np.ones_like(ids)
    positions = np.arange(ids.shape[1], dtype=np.int64)[None]
    worst, same_tokens, digest = 0.0, True, hashlib.sha256()
    for _ in range(steps + 1):
        got = candidate.forward(states[0], ids, mask, positions)
        want = reference.forward(states[1], ids, mask, positions)
        worst = max(worst, float(np.abs(got - want).max()))
        same_tokens &= bool(got.argmax(-1)[0] == want.argmax(-1)[0])
        digest.update(np.ascontiguousarray(got, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(want, dtype=np.float32).tobytes())
        ids = want.argmax(-1)[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
        positions = positions[:, -1:] + 1
    return {"max_abs_diff": worst, "greedy_match": same_tokens, "prompt_tokens": len(prompt_ids), "steps": steps,
            "logits_sha256": digest.hexdigest()[:16]}


@contextlib.contextmanager
def torch_threads(count: int):
    """torch (and the MKL/oneDNN kernels under it) on `count` threads inside the block, as before after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_parity(folder: Path, manifest: Manifest, hf_model, target, settings, prompt_len: int = 12,
                 steps: int = 4) -> dict:
    """compare_backends for an export folder's model (described by its `manifest`, files not yet listed)
    against its transformers model (seeded prompt), both sides on PARITY_THREADS threads, under the target's
    parity backend (a TensorRT export's ONNX graph runs under ONNX Runtime on a CPU-only machine)."""
    if reason := target.parity_unavailable(settings):
        return {"max_abs_diff": None, "greedy_match": None, "unavailable": reason}
    spec = manifest.spec
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, spec.vocab_size, size=min(prompt_len, spec.max_context - steps - 1)).tolist()
    kind = target.parity_backend
    candidate = open_backend(Path(folder), manifest, kind=kind, threads=PARITY_THREADS, exact=True)
    with torch_threads(PARITY_THREADS):
        result = compare_backends(candidate, TorchReferenceBackend(hf_model, spec.max_context), prompt, steps)
    return {**result, "backend": kind, "threads": PARITY_THREADS}
