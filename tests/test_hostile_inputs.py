"""Hostile input (issue #25): only checked safetensors are ever read, and every bad value, text, file or path is
a one-line error (the CLI: exit code 1, or argparse's 2 for a bad flag value, and never a traceback)."""

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import luodi
from luodi.errors import CorruptModelError
from luodi.exporters.spec import spec_from_config
from luodi.loaders import resolve
from luodi.loaders.hf_folder import load_reference
from luodi.tokenizer import Tokenizer


def _cli(*args, env=None, timeout=120):
    """(exit code, stdout, stderr) of `luodi ARGS`; args may be bytes (argv that is not UTF-8)."""
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    proc = subprocess.run([sys.executable, "-m", "luodi", *argv], capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def _one_line_error(code, err, codes=(1,)):
    """The exit code is one of `codes` and stderr is one line, no traceback."""
    assert code in codes, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def _checkpoint(tmp_path, name="tiny-llama") -> Path:
    """A copy of a tiny model's Hugging Face folder to tamper with."""
    folder = tmp_path / "checkpoint"
    shutil.copytree(resolve(name).hf_dir, folder)
    return folder


def _unwritable(tmp_path) -> Path:
    """A folder nothing can be created in: read-only for a normal user; for root (who ignores modes), /sys."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return folder
    if _mkdir_fails(Path("/sys")):
        return Path("/sys")
    pytest.skip("no folder here refuses writes")


def _mkdir_fails(folder: Path) -> bool:
    """Whether creating a folder inside `folder` fails (removing it again if it did not)."""
    try:
        (folder / "luodi-probe").mkdir()
    except OSError:
        return True
    (folder / "luodi-probe").rmdir()
    return False


# ---- only safetensors are read -------------------------------------------------------------------------------

def _fake_torch_load(monkeypatch) -> list:
    """Record (and refuse) every torch.load call: luodi must never get there."""
    import torch

    calls = []

    def fake(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("torch.load reached")

    monkeypatch.setattr(torch, "load", fake)
    return calls


def test_index_naming_a_pickle_never_reaches_torch_load(tmp_path, monkeypatch):
    folder = _checkpoint(tmp_path)
    (folder / "model.safetensors").rename(folder / "kept.safetensors")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickled payload")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "pytorch_model.bin"}}))
    calls = _fake_torch_load(monkeypatch)
    with pytest.raises(CorruptModelError, match="pytorch_model.bin"):
        load_reference(folder)
    assert calls == []


def test_config_naming_other_weights_is_not_followed(tmp_path, monkeypatch):
    """transformers would load whatever config.json's transformers_weights names (a .bin included)."""
    folder = _checkpoint(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"transformers_weights": "adapter_model.bin"}))
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04pickled payload")
    calls = _fake_torch_load(monkeypatch)
    assert load_reference(folder).config.model_type == "llama"
    assert calls == []


def _index_entry(folder: Path, kind: str) -> tuple[str, str]:
    """A hostile index entry of `kind` (making what it names) and the reason the refusal must give."""
    outside = folder.parent / "outside.safetensors"
    shutil.copy(folder / "model.safetensors", outside)
    made = {
        "pickle": ("weights.bin", "only .safetensors files directly in the model folder"),
        "parent": ("../outside.safetensors", "only .safetensors files directly in the model folder"),
        "absolute": (str(outside), "only .safetensors files directly in the model folder"),
        "subfolder": ("sub/model.safetensors", "only .safetensors files directly in the model folder"),
        "link inside": ("link.safetensors", "a link"),
        "link outside": ("away.safetensors", "a link"),
        "folder": ("dir.safetensors", "not a regular file"),
        "pipe": ("fifo.safetensors", "not a regular file"),
        "not a string": (7, "only .safetensors files"),
    }[kind]
    (folder / "weights.bin").write_bytes(b"\x80\x04pickled payload")
    (folder / "sub").mkdir()
    shutil.copy(outside, folder / "sub" / "model.safetensors")
    (folder / "link.safetensors").symlink_to(folder / "model.safetensors")
    (folder / "away.safetensors").symlink_to(outside)
    (folder / "dir.safetensors").mkdir()
    os.mkfifo(folder / "fifo.safetensors")
    return made


@pytest.mark.parametrize("kind", ["pickle", "parent", "absolute", "subfolder", "link inside", "link outside",
                                  "folder", "pipe", "not a string"])
def test_index_entries_are_refused_before_any_file_is_opened(tmp_path, kind):
    folder = _checkpoint(tmp_path)
    entry, reason = _index_entry(folder, kind)
    (folder / "model.safetensors").rename(folder / "kept.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"lm_head.weight": "kept.safetensors", "model.norm.weight": entry}}))
    with pytest.raises(CorruptModelError, match=reason):
        resolve(str(folder))


# ---- corrupt safetensors ---------------------------------------------------------------------------------------

def _safetensors(header, data: bytes = b"\0" * 16, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


_TENSOR = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
CORRUPT = {
    "empty": b"",
    "shorter than its length field": b"\x01\x02\x03",
    "huge header length": struct.pack("<Q", 2 ** 63) + b"{}",
    "header longer than the file": _safetensors({"w": _TENSOR}, length=10_000),
    "garbage": bytes(range(256)) * 8,
    "header not JSON": _safetensors(b"{not json at all"),
    "header not UTF-8": _safetensors(b'{"\xff": 1}'),
    "header a JSON list": _safetensors([1, 2]),
    "unknown dtype": _safetensors({"w": _TENSOR | {"dtype": "F128"}}),
    "negative shape": _safetensors({"w": _TENSOR | {"shape": [-2, -2]}}),
    "shape not integers": _safetensors({"w": _TENSOR | {"shape": [2.0, "2"]}}),
    "size not dtype x shape": _safetensors({"w": _TENSOR | {"shape": [3, 2]}}),
    "offsets past the end": _safetensors({"w": _TENSOR | {"data_offsets": [16, 32]}}),
    "offsets reversed": _safetensors({"w": _TENSOR | {"data_offsets": [16, 0]}}),
    "overlapping tensors": _safetensors({"a": _TENSOR, "b": _TENSOR}),
    "truncated data": _safetensors({"w": _TENSOR}, b"\0" * 10),
    "bytes after the data": _safetensors({"w": _TENSOR}, b"\0" * 24),
    "tensor entry not an object": _safetensors({"w": [1, 2, 3]}),
    "metadata not strings": _safetensors({"__metadata__": {"format": 1}, "w": _TENSOR}),
    "duplicate tensor names": _safetensors(b'{"w": ' + json.dumps(_TENSOR).encode() + b', "w": '
                                           + json.dumps(_TENSOR).encode() + b"}"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_corrupt_safetensors_is_one_clear_error(tmp_path, kind):
    folder = _checkpoint(tmp_path)
    (folder / "model.safetensors").write_bytes(CORRUPT[kind])
    with pytest.raises(CorruptModelError, match=r"model\.safetensors: not a valid safetensors file") as info:
        resolve(str(folder))
    assert "\n" not in str(info.value)


def test_truncated_real_safetensors_cli(tmp_path):
    folder = _checkpoint(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    code, _, err = _cli("export", folder, "--out", tmp_path / "out")
    _one_line_error(code, err)
    assert "model.safetensors: not a valid safetensors file" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("patch", [{"num_hidden_layers": 64}, {"num_hidden_layers": 10 ** 9},
                                   {"num_hidden_layers": 1}, {"hidden_size": "wide"}, {"num_attention_heads": 0},
                                   {"max_position_embeddings": -5}])
def test_config_that_does_not_fit_its_weights(tmp_path, patch):
    """A config.json that disagrees with the weights: refused (never a partly random model, never one of any size
    built before the check)."""
    folder = _checkpoint(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | patch))
    with pytest.raises(CorruptModelError) as info:
        spec_from_config(load_reference(folder).config)
    assert "\n" not in str(info.value)


def test_garbage_tokenizer_file(tmp_path):
    folder = _checkpoint(tmp_path)
    (folder / "tokenizer.json").write_text("garbage")
    code, _, err = _cli("export", folder, "--out", tmp_path / "out")
    _one_line_error(code, err)
    assert "tokenizer" in err


# ---- command-line values ---------------------------------------------------------------------------------------

BAD_FLAGS = [
    ("generate", "--seed", "-5"), ("generate", "--threads", "0"), ("generate", "--threads", "-3"),
    ("generate", "--threads", "100000000"), ("generate", "--temperature", "inf"), ("generate", "--temperature", "nan"),
    ("generate", "--top-p", "nan"), ("generate", "--repetition-penalty", "inf"), ("generate", "--top-k", "-1"),
    ("generate", "--max-new-tokens", "-1"), ("generate", "--draft-tokens", "0"), ("bench", "--repeat", "0"),
    ("bench", "--new-tokens", "0"), ("bench", "--threads", "0"), ("bench", "--prompt-tokens", "0"),
    ("eval", "--window", "1"), ("eval", "--max-tokens", "many"), ("export", "--max-context", "0"),
    ("export", "--group-size", "0"), ("export", "--size-budget", "-1"), ("export", "--trt-workspace-mb", "0"),
    ("export", "--max-batch", "0"), ("triton", "--instances", "0"), ("triton", "--threads", "-3"),
]


def _command(export_dir, command: str, tmp_path) -> list:
    """A command that would run on the tiny export: only the flag under test is bad."""
    folder = export_dir("tiny-llama")
    return {"generate": ["generate", folder, "--prompt", "hi", "--max-new-tokens", "2"],
            "bench": ["bench", folder, "--repeat", "1", "--new-tokens", "2"],
            "eval": ["eval", folder, "--text", Path(__file__)],
            "export": ["export", "tiny-llama", "--out", tmp_path / "out"],
            "triton": ["triton", folder, "--out", tmp_path / "repo"]}[command]


@pytest.mark.parametrize("command, flag, value", BAD_FLAGS)
def test_bad_flag_values_are_refused_in_one_line(export_dir, tmp_path, command, flag, value):
    code, out, err = _cli(*_command(export_dir, command, tmp_path), flag, value)
    _one_line_error(code, err, codes=(2,))
    assert flag in err and out == ""


def test_invalid_utf8_prompt_argument(export_dir):
    for command in (["generate", export_dir("tiny-llama")], ["bench", export_dir("tiny-llama"), "--repeat", "1"]):
        code, _, err = _cli(*command, "--prompt", b"caf\xe9 \xff")
        _one_line_error(code, err, codes=(2,))
        assert "--prompt" in err and "UTF-8" in err


@pytest.fixture
def bad_files(tmp_path):
    """Text files a user might pass by mistake: not UTF-8, a folder, a named pipe."""
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 au lait\n\xff\xfe\n")
    (tmp_path / "folder.txt").mkdir()
    os.mkfifo(tmp_path / "pipe.txt")
    return {"not UTF-8": (tmp_path / "latin1.txt", "not UTF-8"), "folder": (tmp_path / "folder.txt", "is a folder"),
            "pipe": (tmp_path / "pipe.txt", "not a regular file")}


@pytest.mark.parametrize("flags", [["bench", "--repeat", "1", "--new-tokens", "2", "--prompt-file"],
                                   ["bench", "--repeat", "1", "--new-tokens", "2", "--prompts"], ["eval", "--text"]])
@pytest.mark.parametrize("kind", ["not UTF-8", "folder", "pipe"])
def test_bad_text_files(export_dir, bad_files, flags, kind):
    path, reason = bad_files[kind]
    code, _, err = _cli(flags[0], export_dir("tiny-llama"), *flags[1:], path, timeout=60)
    _one_line_error(code, err)
    assert str(path) in err and reason in err


def test_calibration_text_not_utf8(bad_files, tmp_path):
    path, _ = bad_files["not UTF-8"]
    code, _, err = _cli("export", "tiny-llama", "--out", tmp_path / "out", "--precision", "int4", "--method", "gptq",
                        "--calib", path)
    _one_line_error(code, err)
    assert str(path) in err and "not UTF-8" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["export", "bundle", "triton"])
@pytest.mark.parametrize("where", ["under a file", "read-only"])
def test_out_that_cannot_be_written(export_dir, tmp_path, command, where):
    if where == "under a file":
        (tmp_path / "a-file").write_text("x")
        out = tmp_path / "a-file" / "out"
    else:
        out = _unwritable(tmp_path) / "out"
    model = "tiny-llama" if command == "export" else export_dir("tiny-llama")
    code, _, err = _cli(command, model, "--out", out)
    _one_line_error(code, err, codes=(1, 2))
    assert str(out) in err


def test_read_only_cache(tmp_path):
    cache = _unwritable(tmp_path) / "cache"
    code, _, err = _cli("export", "tiny-llama", "--out", tmp_path / "out", env={"LUODI_CACHE": str(cache)})
    _one_line_error(code, err)
    assert str(cache) in err and "LUODI_CACHE" in err


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("command", [["generate", "--prompt", "hi", "--max-new-tokens", "0"],
                                     ["bench", "--new-tokens", "1", "--repeat", "1"]])
def test_json_output_is_strict_json(export_dir, command):
    code, out, err = _cli(command[0], export_dir("tiny-llama"), *command[1:], "--json")
    assert code == 0, err
    report = _strict_json(out)
    assert report["stats"]["ttft_s"] is None if command[0] == "generate" else report["decode_tokens_per_s"] is None


# ---- the Python API --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lm(export_dir):
    return luodi.load(export_dir("tiny-llama"))


@pytest.mark.parametrize("threads", [0, -3, 10 ** 8, 2.5, True])
def test_bad_thread_counts(export_dir, threads):
    with pytest.raises(luodi.LuodiError, match="threads must be"):
        luodi.load(export_dir("tiny-llama"), threads=threads)


@pytest.mark.parametrize("kwargs", [{"temperature": float("inf")}, {"repetition_penalty": float("inf")},
                                    {"seed": -5}, {"seed": 1.5}, {"top_k": True}, {"stop_strings": "ab"},
                                    {"stop_token_ids": ["a"]}])
def test_bad_generation_values(lm, kwargs):
    with pytest.raises(luodi.LuodiError):
        lm.generate("hi", max_new_tokens=2, **kwargs)


@pytest.mark.parametrize("messages", [[{"role": 1}], [{"content": "x"}], [{"role": "user"}],
                                      [{"role": "user", "content": 5}], [{"role": None, "content": "x"}],
                                      [{"role": "user", "content": "x"}, "not a message"],
                                      [{"role": "user", "content": "x"}, ["nested"]],
                                      [{"role": "user", "content": "caf\udce9"}]])
def test_malformed_chat_messages(lm, messages):
    with pytest.raises(luodi.LuodiError) as info:
        lm.chat(messages, max_new_tokens=2)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("prompt", [None, {"role": "user", "content": "x"}, ["x", {"role": "user", "content": "y"}],
                                    [1.5, 2], [True], "caf\udce9", b"bytes"])
def test_malformed_prompts(lm, prompt):
    with pytest.raises(luodi.LuodiError):
        lm.generate(prompt, max_new_tokens=2)


def test_chat_with_a_base_model(export_dir, lm, tmp_path):
    """A model without a chat template asked for chat: a bad request (a ValueError naming the model), not a
    corrupt model."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(export_dir("tiny-llama") / name, tmp_path / name)
    base = luodi.LanguageModel(lm.backend, Tokenizer(tmp_path), sorted(lm.eos_ids), lm.pad_id)
    with pytest.raises(ValueError, match="no chat template") as info:
        base.chat([{"role": "user", "content": "hi"}], max_new_tokens=2)
    assert str(tmp_path) in str(info.value)
