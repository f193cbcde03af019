"""Exported ONNX graphs against transformers: fp32 logits over a prefill and decode steps with a past."""

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from luodi.manifest import read_manifest
from luodi.runtimes import open_backend


def _hf_steps(model, prompts, mask, steps):
    """Reference logits (last position) for a padded batch, then `steps` greedy decode steps."""
    ids, mask = torch.tensor(prompts), torch.tensor(mask)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache, out = DynamicCache(config=model.config), []
    with torch.no_grad():
        for _ in range(steps + 1):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache).logits[:, -1]
            out.append(logits.numpy())
            ids = logits.argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(ids)], dim=-1)
            positions = positions[:, -1:] + 1
    return out


def _onnx_steps(folder, prompts, mask, reference_logits, kind=None):
    """The export's logits fed the same tokens as the reference (its greedy picks), so steps stay comparable."""
    manifest = read_manifest(folder)
    backend = open_backend(folder, manifest, kind=kind, threads=2)
    state = backend.new_state(len(prompts))
    ids, mask = np.array(prompts), np.array(mask)
    positions = np.clip(mask.cumsum(-1) - 1, 0, None)
    out = []
    for want in reference_logits:
        out.append(backend.forward(state, ids, mask, positions))
        ids = want.argmax(-1)[:, None]
        mask = np.concatenate([mask, np.ones_like(ids)], axis=1)
        positions = positions[:, -1:] + 1
    return out


def _max_diff(name, export_dir, reference, steps=5, kind=None, statistic=np.max):
    """The largest |logit difference| from transformers over a few steps of two prompts, one left-padded (with
    `statistic=np.mean`: the largest step's mean, a steadier measure of a quantized export's error)."""
    model, tok = reference(name)
    a = tok("The quick brown fox jumps over the lazy dog")["input_ids"]
    b = tok("Paris")["input_ids"]
    pad = [tok.pad_token_id or 0] * (len(a) - len(b))
    prompts, mask = [a, pad + b], [[1] * len(a), [0] * len(pad) + [1] * len(b)]
    want = _hf_steps(model, prompts, mask, steps)
    got = _onnx_steps(export_dir(name), prompts, mask, want, kind)
    return max(float(statistic(np.abs(g - w))) for g, w in zip(got, want))


def test_tiny_logits_match_transformers(tiny, export_dir, reference):
    assert _max_diff(tiny, export_dir, reference) <= 1e-4


@pytest.mark.smollm2
def test_smollm2_logits_match_transformers(export_dir, reference):
    assert _max_diff("smollm2-135m", export_dir, reference) <= 1e-3


def test_export_records_its_own_parity_check(tiny, export_dir):
    parity = read_manifest(export_dir(tiny)).parity
    assert parity["greedy_match"] and parity["max_abs_diff"] <= 1e-4 and parity["steps"] >= 3


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3"])
def test_canonical_decoder_shares_the_reference_weights(name, reference):
    """The canonical decoder holds the transformers model's fp32 tensors, not copies (one copy of the weights in
    memory while the export traces); only Gemma's folded norm weights are its own."""
    from luodi.exporters.weights import canonical_from_hf

    hf_model = reference(name)[0]
    stored = {t.untyped_storage().data_ptr() for t in hf_model.parameters()}
    canonical = canonical_from_hf(hf_model)
    own = [n for n, t in canonical.named_parameters() if t.untyped_storage().data_ptr() not in stored]
    assert own == [n for n in own if n.endswith("norm.weight")]
    assert bool(own) == (name == "tiny-gemma3")
