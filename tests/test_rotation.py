"""The residual stream turned by a random orthogonal matrix (luodi/compress/rotation.py): the same model,
other weights; and scripts/off_grid_model.py, which writes it as a folder luodi exports."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from luodi.compress.rotation import random_orthogonal, rotate_residual
from luodi.compress.student import build_student
from luodi.exporters import export_model
from luodi.loaders.hf_folder import load_reference
from luodi.loaders.tiny import build_tiny

ROOT = Path(__file__).resolve().parents[1]
ARCH = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rotation") / "tiny"
    folder.mkdir()
    build_tiny("llama", dict(ARCH), 0, folder)
    return folder


# the tied llama; an untied one with biases on every attention projection and heads narrower than width/heads;
# Qwen2 (q/k/v biases) and Qwen3 (norms over each head of q and k)
SHAPES = {"llama": ("llama", ARCH),
          "llama-untied-biased": ("llama", ARCH | dict(tie_word_embeddings=False, attention_bias=True, head_dim=24)),
          "qwen2": ("qwen2", ARCH), "qwen3": ("qwen3", ARCH | dict(head_dim=24))}


def test_a_random_orthogonal_matrix_is_orthogonal_and_seeded():
    q = random_orthogonal(48, 3)
    assert torch.allclose(q @ q.T, torch.eye(48, dtype=torch.float64), atol=1e-12)
    assert torch.equal(q, random_orthogonal(48, 3)) and not torch.equal(q, random_orthogonal(48, 4))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_rotated_model_computes_the_same_logits_with_other_weights(shape, tmp_path):
    family, arch = SHAPES[shape]
    build_tiny(family, dict(arch), 0, tmp_path)
    model = load_reference(tmp_path)
    config = model.config.to_dict()
    state = {name: t.detach() for name, t in model.state_dict().items()}
    with torch.no_grad():  # nonzero biases, so a bias left unrotated shows
        for name, t in state.items():
            if name.endswith(".bias"):
                t.copy_(torch.randn(t.shape, generator=torch.Generator().manual_seed(2)) * 0.5)
    rotated_config, rotated_state = rotate_residual(config, state, seed=0)
    rotated = build_student(rotated_config, rotated_state)
    ids = torch.randint(0, config["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(ids).logits, rotated(ids).logits
    assert (expected - got).abs().max() < 1e-4 * expected.abs().max()
    assert not rotated_config["tie_word_embeddings"] and config["tie_word_embeddings"] == arch["tie_word_embeddings"]
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                 "model.layers.1.mlp.down_proj.weight", "lm_head.weight"):
        before = state.get(name, state["model.embed_tokens.weight"])
        assert (rotated_state[name] - before).abs().mean() > 0.5 * before.abs().mean(), name
    # a pure turn keeps the embedding's row lengths and a writer's column lengths (readers also carry the norm)
    for name, dim in (("model.embed_tokens.weight", 1), ("model.layers.1.mlp.down_proj.weight", 0)):
        assert torch.allclose(rotated_state[name].norm(dim=dim), state[name].norm(dim=dim), rtol=1e-4)
    assert all(torch.equal(t, torch.ones_like(t)) for n, t in rotated_state.items()
               if n.endswith("layernorm.weight") or n == "model.norm.weight")


def test_the_script_writes_a_folder_that_exports_with_parity(tiny, tmp_path):
    out = tmp_path / "rotated"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "off_grid_model.py"), str(tiny), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    diff = float(done.stdout.split("max |logit difference| ")[1].split()[0])
    assert diff < 1e-4
    manifest = json.loads((export_model(str(out), target="ort", out=tmp_path / "ort", progress=False)
                           / "manifest.json").read_text())
    assert manifest["parity"]["max_abs_diff"] < 1e-4 and manifest["parity"]["greedy_match"]
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "off_grid_model.py"), str(tiny), "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "exists" in again.stderr


@pytest.mark.parametrize("model", ["tiny-gemma3", "tiny-phi3", "tiny-gpt2"])
def test_blocks_it_cannot_fold_are_refused_in_one_line(model, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "off_grid_model.py"), model,
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "rotating the residual stream needs" in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_out_folder_it_cannot_write_is_one_line(tiny, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "off_grid_model.py"), str(tiny),
                           "--out", str(blocker / "rotated")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and str(blocker) in done.stderr, done.stderr
    assert blocker.read_text() == "not a folder"
