"""The OpenVINO target: a stateful IR per family that matches transformers, OpenVINO's own fusions of it,
state reset between generations, padded batches, weight compression, and bad input."""

import shutil
import subprocess
import sys

import openvino as ov
import pytest

import luodi
from luodi.errors import ContextLengthError, CorruptModelError, LuodiError
from luodi.exporters import export_model
from luodi.manifest import read_manifest

from test_parity import _max_diff


def _ov_ops(folder):
    return {op.get_type_name() for op in ov.Core().read_model(str(folder / "openvino_model.xml")).get_ops()}


def test_tiny_logits_match_transformers(tiny, export_dir, reference):
    assert _max_diff(tiny, lambda name: export_dir(name, "openvino"), reference) <= 1e-4


@pytest.mark.smollm2
def test_smollm2_logits_match_transformers(export_dir, reference):
    assert _max_diff("smollm2-135m", lambda name: export_dir(name, "openvino"), reference) <= 1e-3


def test_ir_is_stateful_and_fused(tiny, export_dir):
    folder = export_dir(tiny, "openvino")
    manifest = read_manifest(folder)
    ops = _ov_ops(folder)
    assert {"ReadValue", "Assign"} <= ops
    model = ov.Core().read_model(str(folder / "openvino_model.xml"))
    names = {n for port in model.inputs for n in port.get_names()}
    assert names == {"input_ids", "attention_mask", "position_ids", "beam_idx"}
    spec, runtime = manifest.spec, manifest.openvino["runtime_ops"]
    # OpenVINO's own SDPA kernel, per layer; soft-capped scores (Gemma 2) stay as ops: its SDPA has no softcap
    assert runtime.get("ScaledDotProductAttention", 0) == (0 if spec.attn_softcap else spec.num_layers)
    if spec.family != "gpt2":  # two norms a block, four with sandwich norms, two more with QK-norm
        norms = 2 + 2 * spec.sandwich_norms + 2 * spec.qk_norm
        assert runtime["RMS"] == norms * spec.num_layers + 1 and runtime["RoPE"] == 2 * spec.num_layers
    plan = manifest.memory.activations["prefill_max_context"]  # planned on the ONNX graph before lowering
    assert 0 < plan["planned_peak_bytes"] < plan["naive_bytes"]


def test_inspect_reports_the_lowered_export(export_dir):
    from luodi.inspect import format_report, inspect_model

    report = inspect_model(export_dir("tiny-llama", "openvino"))
    assert report["runtime_ops"]["ScaledDotProductAttention"] == 2 and report["kv_cache"] == "stateful"
    assert "OpenVINO runtime ops" in format_report(report)
    with pytest.raises(LuodiError, match="keeps only its OpenVINO IR"):
        inspect_model(export_dir("tiny-llama", "openvino"), (1, 8, 0))


def test_state_resets_between_generations_and_batches_match(export_dir):
    lm = luodi.load(export_dir("tiny-qwen2", "openvino"))
    reference = luodi.load("tiny-qwen2", backend="torch")
    prompts = ["The quick brown fox jumps over", "Hi"]
    first, again = (lm.generate(prompts[0], max_new_tokens=10).token_ids for _ in range(2))
    assert first == again
    batch = [r.token_ids for r in lm.generate(prompts, max_new_tokens=10)]
    assert batch == [r.token_ids for r in reference.generate(prompts, max_new_tokens=10)]


def test_fp16_int8_and_int4_compress_the_weights(tmp_path):
    sizes = {}
    for precision in ("fp16", "int8", "int4"):
        out = export_model("tiny-llama", target="openvino", precision=precision, out=tmp_path / precision,
                           progress=False)
        manifest = read_manifest(out)
        assert manifest.precision == precision and manifest.parity["max_abs_diff"] < 1.0
        sizes[precision] = (out / "openvino_model.bin").stat().st_size
        lm = luodi.load(out)
        assert _inference_precision(lm) == "f32"  # not the plugin's bf16 where the CPU has it
        assert lm.generate("Hello", max_new_tokens=4).token_ids
    assert sizes["int4"] < sizes["int8"] < sizes["fp16"]


def test_unavailable_precision(tmp_path):
    with pytest.raises(LuodiError, match="precision 'bf16' is not available for target openvino; available: fp32, "
                                         "fp16, int8, int4"):
        export_model("tiny-llama", target="openvino", precision="bf16", out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_missing_or_truncated_weights(export_dir, tmp_path):
    for damage in ("missing", "truncated"):
        folder = tmp_path / damage
        shutil.copytree(export_dir("tiny-llama", "openvino"), folder)
        weights = folder / "openvino_model.bin"
        if damage == "missing":
            weights.unlink()
        else:
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        with pytest.raises(CorruptModelError):
            luodi.load(folder, verify=False)
        with pytest.raises(CorruptModelError):
            luodi.load(folder)


def _inference_precision(lm) -> str:
    return lm.backend.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()


def _kv_precision(lm) -> str:
    return lm.backend.compiled.get_property("KV_CACHE_PRECISION").to_string()


def test_inference_precision_is_f32_unless_asked(export_dir):
    folder = export_dir("tiny-llama", "openvino")
    faithful = luodi.load(folder)
    assert _inference_precision(faithful) == "f32" and _kv_precision(faithful) == "f32"
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    for precision, capability in (("bf16", "BF16"), ("f16", "FP16")):
        if capability in capabilities:
            fast = luodi.load(folder, inference_precision=precision)
            assert _inference_precision(fast) == precision and _kv_precision(fast) != "f32"
            assert len(fast.generate("Hello", max_new_tokens=4).token_ids) == 4
        else:
            with pytest.raises(LuodiError, match=f"this CPU cannot compute in {precision}"):
                luodi.load(folder, inference_precision=precision)
    with pytest.raises(LuodiError, match="^unknown inference precision 'int8'; choose one of f32, bf16, f16$"):
        luodi.load(folder, inference_precision="int8")


def test_bench_names_the_inference_precision(export_dir):
    folder = export_dir("tiny-llama", "openvino")
    args = [sys.executable, "-m", "luodi", "bench", str(folder), "--prompt-tokens", "8", "--new-tokens", "3",
            "--repeat", "1"]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0 and f"{folder} [openvino f32, 2 threads]" in proc.stdout, proc.stderr
    proc = subprocess.run([*args, "--inference-precision", "bf17"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice: 'bf17'" in proc.stderr


def test_unknown_device(export_dir):
    with pytest.raises(LuodiError, match="OpenVINO has no device 'TPU'"):
        luodi.load(export_dir("tiny-llama", "openvino"), device="TPU")


def test_prompt_beyond_context(export_dir):
    lm = luodi.load(export_dir("tiny-gpt2", "openvino"))
    with pytest.raises(ContextLengthError, match="max context is 256"):
        lm.generate(list(range(5, 305)), max_new_tokens=4)


def test_openvino_missing_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    from luodi.runtimes.openvino import import_openvino

    with pytest.raises(LuodiError, match=r"pip install 'luodi\[runtime-openvino\]'"):
        import_openvino()


def test_stateless_ir_runs_with_the_cache_passed_in(export_dir, tmp_path):
    """An IR converted without the stateful lowering (past/present as tensors) gives the stateful IR's tokens."""
    from luodi.runtimes.openvino import OpenVinoBackend

    plain = export_model("tiny-llama", out=tmp_path / "plain", passes="cleanup,additive_attention_mask",
                         progress=False)
    ov.save_model(ov.convert_model(str(plain / "model.onnx")), str(tmp_path / "stateless.xml"))
    stateful = luodi.load(export_dir("tiny-llama", "openvino"))
    backend = OpenVinoBackend(tmp_path / "stateless.xml", read_manifest(plain).spec)
    assert not backend.stateful
    stateless = luodi.LanguageModel(backend, stateful.tokenizer, stateful.eos_ids, stateful.pad_id)
    prompts = ["The quick brown fox", "A longer prompt than the first one is"]
    assert [r.token_ids for r in stateless.generate(prompts, max_new_tokens=8)] == \
        [r.token_ids for r in stateful.generate(prompts, max_new_tokens=8)]
