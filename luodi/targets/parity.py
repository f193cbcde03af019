"""The check every export passes before its folder appears: the exported graph under its runtime (ONNX
Runtime for a TensorRT export's ONNX graph) against the transformers model, on a prefill and several decode
steps over the KV cache."""

from pathlib import Path

import numpy as np

from ..runtimes import open_backend
from ..runtimes.torch_ref import TorchReferenceBackend



def compare_backends(candidate, reference, prompt_ids: list[int], steps: int) -> dict:
    """Max |logit difference| and greedy agreement of two backends over a prefill then `steps` decode steps."""
    states = candidate.new_state(1), reference.new_state(1)
    ids = np.asarray([prompt_ids], dtype=np.int64)
    mask = np.ones_like(ids)
    positions = np.arange(ids.shape[1], dtype=np.int64)[None]
    worst, same_tokens = 0.0, True
    for _ in range(steps + 1):
        got = candidate.forward(states[0], ids, mask, positions)
        want = reference.forward(states[1], ids, mask, positions)
        worst = max(worst, float(np.abs(got - want).max()))
        same_tokens &= bool(got.argmax(-1)[0] == want.argmax(-1)[0])
        ids = want.argmax(-1)[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
        positions = positions[:, -1:] + 1
    return {"max_abs_diff": worst, "greedy_match": same_tokens, "prompt_tokens": len(prompt_ids), "steps": steps}


def check_parity(folder: Path, manifest: dict, hf_model, target, settings, prompt_len: int = 12,
                 steps: int = 4) -> dict:
    """compare_backends for an export folder's model (described by its `manifest`, files not yet listed)
    against its transformers model (seeded prompt), under the target's parity backend (a TensorRT export's
    ONNX graph runs under ONNX Runtime on a CPU-only machine)."""
    if reason := target.parity_unavailable(settings):
        return {"max_abs_diff": None, "greedy_match": None, "unavailable": reason}
    spec = manifest["spec"]
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, spec["vocab_size"], size=min(prompt_len, spec["max_context"] - steps - 1)).tolist()
    kind = target.parity_backend
    candidate = open_backend(Path(folder), manifest, kind=kind)
    return {**compare_backends(candidate, TorchReferenceBackend(hf_model, spec["max_context"]), prompt, steps),
            "backend": kind}
