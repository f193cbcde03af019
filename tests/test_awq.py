"""AWQ: folding the scales leaves the float model's outputs unchanged (every family: norms with and without
bias, gated and plain MLPs, grouped and per-head values), the search never loses to RTN and wins where
activations have outlier channels, and `--method awq` exports end to end."""

import numpy as np
import pytest
import torch

from luodi.exporters import export_model
from luodi.exporters.weights import canonical_from_hf
from luodi.manifest import read_manifest
from luodi.quantization.awq import apply_awq, search_scales

from test_parity import _max_diff
from test_quantization import TEXT


def _logits(model, ids):
    spec = model.spec
    empty = torch.zeros(1, spec.num_kv_heads, 0, spec.head_dim)
    with torch.no_grad():
        return model(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None],
                     [(empty, empty) for _ in model.layers])[0]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-phi3", "tiny-gpt2"])
def test_folded_scales_keep_the_float_model(name, reference):
    hf_model = reference(name)[0]
    model = canonical_from_hf(hf_model)
    hf_weights = {k: v.clone() for k, v in hf_model.state_dict().items()}
    ids = torch.randint(0, model.spec.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    before = _logits(model, ids)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    report = apply_awq(model, tuple(np.random.default_rng(1).integers(0, model.spec.vocab_size, 300).tolist()),
                       bits=4, group=32)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, weights[k])]
    assert changed and report["groups"] >= 2 * model.spec.num_layers
    torch.testing.assert_close(_logits(model, ids), before, rtol=1e-4, atol=1e-4)
    # the canonical decoder shares the reference's tensors: folding must leave the reference as it was
    assert all(torch.equal(v, hf_weights[k]) for k, v in hf_model.state_dict().items())


def test_search_never_loses_to_rtn_and_protects_outlier_channels():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(128, 96)).astype(np.float32)
    x = rng.normal(size=(256, 128)).astype(np.float32)
    _, alpha, loss, rtn = search_scales(x, w, bits=4, group=32)
    assert loss <= rtn
    x[:, [3, 40, 77]] *= 30.0  # a few channels carry most of the activation
    _, alpha, loss, rtn = search_scales(x, w, bits=4, group=32)
    assert alpha > 0 and loss < 0.8 * rtn


def test_awq_export_runs_and_records_its_search(export_dir, reference, tmp_path):
    import luodi

    ids = tuple(luodi.load(export_dir("tiny-qwen2")).tokenizer.encode(open(TEXT).read())[:1024])
    folder = export_model("tiny-qwen2", precision="int4", out=tmp_path / "awq", progress=False,
                          quantization={"method": "awq", "calibration": ids})
    info = read_manifest(folder).quantization
    assert info["method"] == "awq" and info["matmuls_quantized"] == 9
    assert info["awq"]["groups"] == 2 * 3 and info["awq"]["loss_vs_rtn_max"] <= 1.0
    assert _max_diff("tiny-qwen2", lambda _: folder, reference) < 1.0
