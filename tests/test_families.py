"""The transformer families beyond Llama: Gemma 3 and Gemma 2 (sliding windows mixed with full attention,
soft-capping, four norms a block, scaled embeddings), Qwen3 (QK-norm) and Llama 3 rope scaling.

Every tiny family already runs the shared parity, greedy, OpenVINO and TensorRT tests (conftest.TINY); these
add what a wrong sliding window would show: prompts and generations much longer than the window, a
left-padded batch whose cache outgrows it, on ONNX Runtime and OpenVINO."""

import pytest

import luodi
from luodi.contract.manifest import Manifest
from luodi.errors import ManifestMismatchError, UnsupportedArchitectureError
from luodi.exporters.spec import FULL, SLIDING, spec_from_config
from luodi.manifest import read_manifest, read_manifest_json

from test_generation import _hf_greedy
from test_parity import _hf_steps, _onnx_steps

WINDOWED = ["tiny-gemma3", "tiny-gemma2"]
LONG_PROMPT = ("Paris is the capital of France; Berlin is the capital of Germany; Rome is the capital of Italy. "
               "Once upon a time there was a small robot who wanted to learn")


def test_specs_read_the_family_traits(reference):
    gemma3 = spec_from_config(reference("tiny-gemma3")[0].config)
    assert gemma3.sliding_window == 12 and gemma3.layer_types == (SLIDING,) * 5 + (FULL, SLIDING)
    assert gemma3.qk_norm and gemma3.sandwich_norms and gemma3.embedding_scale == 8.0
    assert gemma3.attention_scale == 24 ** -0.5 and gemma3.head_dim == 32 != gemma3.hidden_size // gemma3.num_heads
    assert gemma3.max_context == 256  # not capped at the window: the full layers see everything
    gemma2 = spec_from_config(reference("tiny-gemma2")[0].config)
    assert (gemma2.attn_softcap, gemma2.final_softcap, gemma2.sliding_window) == (2.0, 5.0, 8)
    assert gemma2.layer_types == (SLIDING, FULL) * 2 and not gemma2.qk_norm
    qwen3 = spec_from_config(reference("tiny-qwen3")[0].config)
    assert qwen3.qk_norm and not qwen3.sandwich_norms and qwen3.sliding_window is None
    llama = spec_from_config(reference("tiny-llama")[0].config)
    assert not llama.qk_norm and not llama.sandwich_norms and llama.embedding_scale == 1.0


@pytest.mark.parametrize("target", ["ort", "openvino"])
@pytest.mark.parametrize("name", WINDOWED)
def test_greedy_far_past_the_window_matches_transformers(name, target, export_dir, reference):
    model, tok = reference(name)
    ids, new = tok(LONG_PROMPT)["input_ids"], 24
    window = read_manifest(export_dir(name, target)).spec.sliding_window
    assert len(ids) > 2 * window  # the prompt alone outgrows the window, and every new token slides it on
    lm = luodi.load(export_dir(name, target))
    assert lm.generate(LONG_PROMPT, max_new_tokens=new).token_ids == _hf_greedy(model, tok, ids, new)


@pytest.mark.parametrize("target", ["ort", "openvino"])
@pytest.mark.parametrize("name", WINDOWED)
def test_padded_batch_past_the_window_matches_transformers(name, target, export_dir, reference):
    """Logits of a left-padded batch, prompt then decode steps, each row's cache longer than the window."""
    model, tok = reference(name)
    a, b = tok(LONG_PROMPT)["input_ids"], tok("The quick brown fox jumps over the lazy dog again")["input_ids"]
    pad = [tok.pad_token_id or 0] * (len(a) - len(b))
    prompts, mask = [a, pad + b], [[1] * len(a), [0] * len(pad) + [1] * len(b)]
    assert len(b) > read_manifest(export_dir(name, target)).spec.sliding_window
    want = _hf_steps(model, prompts, mask, 6)
    got = _onnx_steps(export_dir(name, target), prompts, mask, want)
    assert max(float(abs(g - w).max()) for g, w in zip(got, want)) <= 1e-4
    assert all((g.argmax(-1) == w.argmax(-1)).all() for g, w in zip(got, want))


def test_norm_fusion_takes_every_norm_of_every_family(export_dir):
    """fuse_rms_norm matches the folded (1 + w) norms, the sandwich norms and the per-head QK-norms alike, and
    the export's own parity check passed with them."""
    for name in ["tiny-gemma3", "tiny-gemma2", "tiny-qwen3", "tiny-llama3"]:
        manifest = read_manifest(export_dir(name))
        assert manifest.parity["greedy_match"] and manifest.parity["max_abs_diff"] <= 1e-4, name
        spec, passes = manifest.spec, manifest.passes
        norms = 2 + 2 * spec.sandwich_norms + 2 * spec.qk_norm
        assert passes["fuse_rms_norm"] == norms * spec.num_layers + 1, name


def test_unknown_rope_type_and_layer_type_are_refused(reference):
    config = reference("tiny-gemma3")[0].config
    changed = type(config).from_dict(config.to_dict())
    changed.rope_parameters = {**changed.rope_parameters, SLIDING: {"rope_type": "dynamic", "rope_theta": 1e4,
                                                                     "factor": 2.0}}
    with pytest.raises(UnsupportedArchitectureError, match="rope type 'dynamic'"):
        spec_from_config(changed)
    changed = type(config).from_dict(config.to_dict())
    changed.layer_types = ["chunked_attention"] + list(config.layer_types[1:])
    with pytest.raises(UnsupportedArchitectureError, match="layer types"):
        spec_from_config(changed)


def test_manifest_spec_fields_are_optional_and_checked(export_dir):
    data = read_manifest_json(export_dir("tiny-gemma3"))
    assert Manifest.from_json(data, "t").spec.layer_types[5] == FULL
    old = {**data, "spec": {k: v for k, v in data["spec"].items() if k not in ("sliding_window", "layer_types",
                                                                               "qk_norm", "sandwich_norms")}}
    assert Manifest.from_json(old, "t").spec.sliding_window is None  # a manifest from before these fields
    for bad, problem in [({"layer_types": [SLIDING]}, "entries for 7 layers"),
                         ({"sliding_window": None}, "disagree"),
                         ({"layer_types": ["global"] * 7}, "must be one of")]:
        with pytest.raises(ManifestMismatchError, match=problem):
            Manifest.from_json({**data, "spec": {**data["spec"], **bad}}, "t")
