"""The check every export passes before its folder appears: the exported graph under its runtime (ONNX
Runtime for a TensorRT export's ONNX graph) against the transformers model, on a prefill and several decode
steps over the KV cache.

The check is bit-reproducible: both sides run on PARITY_THREADS threads whatever the machine's load or the CPUs
the process may use, and OpenVINO in its exact settings (runtime_libraries.compile_options). Left to themselves,
OpenVINO's CPU plugin and torch each take one thread per CPU the process may use, and a thread count changes the
order of a matrix product's sums: SmolLM2's check gave 5.34e-05 on two CPUs and 5.71e-05 on one (docs/PARITY.md)."""

import contextlib
import hashlib
from dataclasses import dataclass
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


@dataclass
class ReferenceRun:
    """What the reference computed on a prompt: its logits at the prefill and at each decode step after it, each
    step fed the reference's own greedy token. Recorded once, it lets the reference model be freed before the
    candidate exists (an export never holds the transformers model beside its quantize or lower step)."""

    prompt_ids: list[int]
    logits: list[np.ndarray]


def record_reference(reference, prompt_ids: list[int], steps: int) -> ReferenceRun:
    """The reference backend's logits over a prefill of `prompt_ids` then `steps` greedy decode steps."""
    state = reference.new_state(1)
    ids = np.asarray([prompt_ids], dtype=np.int64)
    mask = np.ones_like(ids)
    positions = np.arange(ids.shape[1], dtype=np.int64)[None]
    logits = []
    for _ in range(steps + 1):
        logits.append(reference.forward(state, ids, mask, positions))
        ids = logits[-1].argmax(-1)[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
        positions = positions[:, -1:] + 1
    return ReferenceRun(list(prompt_ids), logits)


def compare_to_reference(candidate, run: ReferenceRun) -> dict:
    """Max |logit difference| and greedy agreement of a backend against a recorded reference run (fed the
    reference's tokens), and a digest of both sides' logits (equal across runs exactly when the comparison is
    bit-reproducible)."""
    state = candidate.new_state(1)
    ids = np.asarray([run.prompt_ids], dtype=np.int64)
    mask = np.ones_like(ids)
    positions = np.arange(ids.shape[1], dtype=np.int64)[None]
    worst, same_tokens, digest = 0.0, True, hashlib.sha256()
    for want in run.logits:
        got = candidate.forward(state, ids, mask, positions)
        worst = max(worst, float(np.abs(got - want).max()))
        same_tokens &= bool(got.argmax(-1)[0] == want.argmax(-1)[0])
        digest.update(np.ascontiguousarray(got, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(want, dtype=np.float32).tobytes())
        ids = want.argmax(-1)[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
        positions = positions[:, -1:] + 1
    return {"max_abs_diff": worst, "greedy_match": same_tokens, "prompt_tokens": len(run.prompt_ids),
            "steps": len(run.logits) - 1, "logits_sha256": digest.hexdigest()[:16]}


def compare_backends(candidate, reference, prompt_ids: list[int], steps: int) -> dict:
    """compare_to_reference against `reference`'s run over a prefill of `prompt_ids` then `steps` decode steps."""
    return compare_to_reference(candidate, record_reference(reference, prompt_ids, steps))


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


def parity_reference(hf_model, spec, prompt_len: int = 12, steps: int = 4) -> ReferenceRun:
    """The transformers model's run on the parity check's prompt (seeded random ids) on PARITY_THREADS threads."""
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, spec.vocab_size, size=min(prompt_len, spec.max_context - steps - 1)).tolist()
    with torch_threads(PARITY_THREADS):
        return record_reference(TorchReferenceBackend(hf_model, spec.max_context), prompt, steps)


def check_parity(folder: Path, manifest: Manifest, reference: ReferenceRun | None, target, settings) -> dict:
    """compare_to_reference for an export folder's model (described by its `manifest`, files not yet listed)
    against the transformers model's recorded run (parity_reference; None where the target cannot check these
    settings), on PARITY_THREADS threads, under the target's parity backend (a TensorRT export's ONNX graph runs
    under ONNX Runtime on a CPU-only machine)."""
    if reason := target.parity_unavailable(settings):
        return {"max_abs_diff": None, "greedy_match": None, "unavailable": reason}
    kind = target.parity_backend
    candidate = open_backend(Path(folder), manifest, kind=kind, threads=PARITY_THREADS, exact=True)
    return {**compare_to_reference(candidate, reference), "backend": kind, "threads": PARITY_THREADS}
