"""Hostile bundles: an attacker rewrites a bundle and recomputes its checksums. Nothing in it is imported or
executed, no file it names is read outside it, every manifest field is checked before use, and `luodi verify`
and luodi.load refuse the same bundles (docs/SECURITY.md lists each check and its test here)."""

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import onnx
import pytest

import luodi
from luodi.bundles import verify_bundle
from luodi.cli import main as cli_main
from luodi.errors import LuodiError
from luodi.manifest import MANIFEST, file_entries, read_manifest_json

ZEN = "Beautiful is better than ugly"


def _cli(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "luodi", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def _hostile_copy(export_dir, tmp_path, edit=None, target="ort") -> Path:
    """A copy of tiny-llama's export with `edit(folder, manifest)` applied and every checksum recomputed, as an
    attacker would."""
    folder = tmp_path / "hostile"
    shutil.copytree(export_dir("tiny-llama", target), folder)
    manifest = read_manifest_json(folder)
    if edit:
        edit(folder, manifest)
    manifest["files"] = file_entries(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def _as_tar(folder: Path, out: Path) -> Path:
    """The folder as a bundle archive (manifest first), without luodi's own packer, which would refuse it."""
    with tarfile.open(out, "w") as tar:
        tar.add(folder / MANIFEST, MANIFEST)
        for name in read_manifest_json(folder)["files"]:
            tar.add(folder / name, name)
    return out


def _refused_everywhere(folder: Path, tmp_path: Path, match: str, capsys) -> None:
    """verify (folder and archive), load (folder and archive) and `luodi verify` all refuse, in one line."""
    archive = _as_tar(folder, tmp_path / "hostile.tar")
    for path in (folder, archive):
        with pytest.raises(LuodiError, match=match):
            verify_bundle(path)
        with pytest.raises(LuodiError, match=match):
            luodi.load(path, cache_dir=tmp_path / "cache")
        capsys.readouterr()
        code = cli_main(["verify", str(path)])
        out, err = capsys.readouterr()
        assert code == 1 and err.startswith("luodi: error:") and err.count("\n") == 1, err
        assert ZEN not in out + err


def test_requires_naming_any_module_imports_nothing(export_dir, tmp_path, capsys):
    folder = _hostile_copy(export_dir, tmp_path, lambda f, m: m.update(requires={"this": "0"}))
    _refused_everywhere(folder, tmp_path, "'this', which is not a runtime luodi knows", capsys)
    assert "this" not in sys.modules


def test_requires_naming_a_file_of_the_bundle_runs_nothing(export_dir, tmp_path, capsys):
    marker = tmp_path / "executed"

    def plant(folder, manifest):
        (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
        manifest["requires"] = {f"{folder.name}.evil": "0"}

    folder = _hostile_copy(export_dir, tmp_path, plant)
    _refused_everywhere(folder, tmp_path, "not a runtime luodi knows", capsys)
    code, _, err = _cli("verify", folder.name, cwd=folder.parent)  # from the parent: the folder is importable
    assert code == 1 and not marker.exists(), err
    code, _, err = _cli("generate", folder.name, "--prompt", "hi", cwd=folder.parent)
    assert code == 1 and not marker.exists(), err


@pytest.mark.parametrize("version", ["0; import os", "latest", "", ">=1.0"])
def test_requires_versions_are_plain_numbers(export_dir, tmp_path, capsys, version):
    folder = _hostile_copy(export_dir, tmp_path, lambda f, m: m["requires"].update(onnxruntime=version)
                           if "requires" in m else m.update(requires={"onnxruntime": version}))
    _refused_everywhere(folder, tmp_path, "not a dotted version number", capsys)


def _point_external_data_at(location: str):
    """Rename the graph to model.bin and point its first external initializer at `location`."""
    def edit(folder, manifest):
        model = onnx.load(folder / "model.onnx", load_external_data=False)
        for tensor in model.graph.initializer:
            entries = {e.key: e for e in tensor.external_data}
            if "location" in entries:
                entries["location"].value = location
                break
        onnx.save(model, folder / "model.bin")
        (folder / "model.onnx").unlink()
        manifest["model_file"] = "model.bin"
    return edit


@pytest.mark.parametrize("location", ["/etc/hostname", "../outside.data", "unlisted.data", "sub/../../x"])
def test_external_data_of_a_model_of_any_name_stays_inside(export_dir, tmp_path, capsys, location):
    (tmp_path / "outside.data").write_bytes(b"\0" * 4096)
    folder = _hostile_copy(export_dir, tmp_path, _point_external_data_at(location))
    if location == "unlisted.data":
        (folder / "unlisted.data").write_bytes(b"\0" * 4096)  # present, but not in the manifest
    _refused_everywhere(folder, tmp_path, "escapes the bundle|not a listed file", capsys)


@pytest.mark.parametrize("file", ["/etc/hostname", "../outside.data", "missing.data"])
def test_embedding_table_file_stays_inside(export_dir, tmp_path, capsys, file):
    (tmp_path / "outside.data").write_bytes(b"\0" * (1 << 20))
    folder = _hostile_copy(export_dir, tmp_path, lambda f, m: m["embedding_table"].update(file=file))
    _refused_everywhere(folder, tmp_path, "escapes the bundle|not a listed file", capsys)


def test_an_unlisted_tokenizer_file_is_never_read(export_dir, tmp_path):
    def unlist(folder, manifest):
        (folder / "tokenizer_config.json").unlink()
        (tmp_path / "elsewhere.json").write_text(json.dumps({"chat_template": "{{ 'injected' }}"}))

    folder = _hostile_copy(export_dir, tmp_path, unlist)
    (folder / "tokenizer_config.json").write_text((tmp_path / "elsewhere.json").read_text())  # after the manifest
    with pytest.raises(LuodiError, match="tokenizer_config.json is not a listed file"):
        luodi.load(folder)
    with pytest.raises(LuodiError, match="tokenizer_config.json is not a listed file"):
        verify_bundle(folder)


def test_a_linked_tokenizer_file_is_refused(export_dir, tmp_path):
    folder = _hostile_copy(export_dir, tmp_path)
    secret = tmp_path / "secret.json"
    secret.write_bytes((folder / "tokenizer.json").read_bytes())
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(secret)  # same bytes: the checksum still matches
    for check in (luodi.load, verify_bundle):
        with pytest.raises(LuodiError, match="tokenizer.json is a link"):
            check(folder)


def test_an_openvino_bundle_runs_only_an_ir(export_dir, tmp_path, capsys):
    folder = _hostile_copy(export_dir, tmp_path, lambda f, m: m.update(backend="openvino"))
    _refused_everywhere(folder, tmp_path, "must be an OpenVINO IR", capsys)


def _set(path: str, value):
    def edit(folder, manifest):
        *parents, key = path.split(".")
        node = manifest
        for part in parents:
            node = node[part]
        node[key] = value
    return edit


MALFORMED = [
    ("source", 5), ("source", None), ("source", {"name": ""}), ("source", {"name": "x", "sha256": "../"}),
    ("logits_window", "8"), ("logits_window", -1), ("logits_window", 10**9), ("logits_window", True),
    ("memory", "big"), ("memory", {"weight_bytes": "x"}), ("memory", {"weight_bytes": -5}), ("memory", None),
    ("generation.pad_token_id", -1), ("generation.pad_token_id", 10**9), ("generation.pad_token_id", "0"),
    ("generation.eos_token_ids", [10**7]), ("generation.eos_token_ids", "5"), ("generation", []),
    ("spec.num_layers", 10**9), ("spec.num_layers", 0), ("spec.head_dim", 10**6), ("spec.head_dim", 1.5),
    ("spec.num_kv_heads", 3), ("spec.vocab_size", -1), ("spec.norm_eps", float("nan")), ("spec.norm", "other"),
    ("spec.max_context", 255), ("max_context", 1 << 40), ("kv_cache", "mystery"), ("backend", "tensorrt"),
    ("backend", "os.system"), ("model_file", "../model.onnx"), ("model_file", "/etc/passwd"), ("model_file", 7),
    ("embedding_table.offset", -1), ("embedding_table.shape", [384]), ("embedding_table.dtype", "object"),
    ("embedding_table.shape", [384, 65]), ("tokenizer_files", ["../../etc/passwd"]), ("tokenizer_files", "x"),
    ("io", None), ("format_version", 99), ("precision", "int3"), ("requires", ["onnxruntime"]),
]


@pytest.mark.parametrize("path,value", MALFORMED, ids=[f"{p}={v!r}"[:40] for p, v in MALFORMED])
def test_malformed_manifest_fields_are_one_line_errors(export_dir, tmp_path, capsys, path, value):
    folder = _hostile_copy(export_dir, tmp_path, _set(path, value))
    _refused_everywhere(folder, tmp_path, "manifest", capsys)


def test_a_bundle_named_like_a_runtime_module_runs_no_code_of_its_own(export_dir, tmp_path):
    """`python -m luodi` puts the working directory on sys.path: a bundle folder named `onnxruntime` holding an
    `__init__.py` must not be imported by the lazy import of the runtime (and the unlisted file is refused)."""
    marker = tmp_path / "executed"
    folder = tmp_path / "onnxruntime"
    shutil.copytree(export_dir("tiny-llama"), folder)
    (folder / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    for command in (["generate", folder.name, "--prompt", "hi"], ["verify", folder.name]):
        code, _, err = _cli(*command, cwd=tmp_path)
        assert code == 1 and "__init__.py is not a listed file" in err and err.count("\n") == 1, err
    assert not marker.exists()


@pytest.mark.parametrize("case", ["deep json", "huge offset", "huge size", "x and x/y", "lists manifest.json",
                                  "long name", "table past the end"])
def test_manifests_that_broke_messages_or_disagreed_are_refused(export_dir, tmp_path, capsys, case):
    folder = _hostile_copy(export_dir, tmp_path)
    manifest = read_manifest_json(folder)
    if case == "deep json":
        text = json.dumps(manifest).replace('"passes": {', '"passes": ' + "[" * 100_000 + "]" * 100_000 + ', "x": {', 1)
    else:
        files = manifest["files"]
        if case == "huge offset":
            manifest["embedding_table"]["offset"] = int("9" * 4200)
        elif case == "huge size":
            next(iter(files.values()))["bytes"] = int("9" * 4200)
        elif case == "x and x/y":
            files["x"] = files["x/y"] = {"bytes": 0, "sha256": "0" * 64}
        elif case == "lists manifest.json":
            files["manifest.json"] = {"bytes": 3, "sha256": "0" * 64}
        elif case == "long name":
            files["a" * 300] = {"bytes": 0, "sha256": "0" * 64}
        else:
            manifest["embedding_table"]["offset"] = files["model.onnx.data"]["bytes"]
        text = json.dumps(manifest)
    (folder / MANIFEST).write_text(text)
    for check in (verify_bundle, luodi.load):
        with pytest.raises(LuodiError, match="manifest"):
            check(folder)
    capsys.readouterr()
    assert cli_main(["verify", str(folder)]) == 1 and capsys.readouterr().err.count("\n") == 1


def test_a_hard_linked_file_is_refused(export_dir, tmp_path):
    outside = tmp_path / "outside.json"
    folder = _hostile_copy(export_dir, tmp_path)
    (folder / "tokenizer.json").rename(outside)
    (folder / "tokenizer.json").hardlink_to(outside)  # same bytes, but the file also lives outside
    for check in (verify_bundle, luodi.load):
        with pytest.raises(LuodiError, match="hard link"):
            check(folder)


@pytest.mark.parametrize("config,template,error", [
    ({"eos_token": 5}, None, "must be strings"), ({"chat_template": [{"name": "x"}]}, None, "must be strings"),
    ({}, "{{ 1 // 0 }}", "refused these messages"), ({}, "{{ (10 ** 5000) ~ '' }}", "refused these messages|not valid jinja")])
def test_hostile_tokenizer_files_are_one_line_errors(export_dir, tmp_path, config, template, error):
    def edit(folder, manifest):
        path = folder / "tokenizer_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
        if template is not None:
            (folder / "chat_template.jinja").write_text(template)
        elif "chat_template" in config:
            (folder / "chat_template.jinja").unlink()
            manifest["tokenizer_files"].remove("chat_template.jinja")

    folder = _hostile_copy(export_dir, tmp_path, edit)
    with pytest.raises(LuodiError, match=error):
        luodi.load(folder).chat([{"role": "user", "content": "hi"}], max_new_tokens=2)
