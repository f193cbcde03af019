"""Bundles: round trip to the export's greedy ids, the torch-free runtime path, verify, and every way a
bundle can be damaged or hostile (flipped byte, truncation, escaping or linked members, outside external
data, missing or old runtime)."""

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import luodi
from luodi.bundles import make_bundle, verify_bundle
from luodi.bundles import requirements as bundle_requirements
from luodi.bundles.onnx_external_data import external_data_locations
from luodi.cli import main as cli_main
from luodi.errors import CorruptModelError, LuodiError, ManifestMismatchError
from luodi.manifest import file_entries

PROMPT = "The river rose overnight and"


@pytest.fixture(scope="module")
def tiny_bundle(export_dir, tmp_path_factory):
    """tiny-llama's ort export and its .tar bundle."""
    folder = export_dir("tiny-llama")
    return folder, make_bundle(folder, tmp_path_factory.mktemp("bundles") / "tiny-llama-ort.tar")


def _ids(model, **kwargs):
    return model.generate(PROMPT, max_new_tokens=12, ignore_eos=True, **kwargs).token_ids


def _members(path: Path) -> dict:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _nothing_unpacked(cache: Path) -> bool:
    return not cache.exists() or not any(cache.iterdir())


def test_tar_bundle_runs_like_the_export_and_unpacks_read_only_once(tiny_bundle, tmp_path):
    folder, tar = tiny_bundle
    members = _members(tar)
    manifest = json.loads(members["manifest.json"])
    assert list(members)[0] == "manifest.json" and "README.md" in members
    assert set(members) - {"manifest.json"} == set(manifest["files"])
    assert manifest["requires"]["onnxruntime"] and manifest["requires"]["luodi"] == luodi.__version__
    assert manifest["memory"]["kv_bytes_at_max_context"] > 0 and manifest["io"]["inputs"][0] == "inputs_embeds"
    assert b"luodi verify tiny-llama-ort.tar" in members["README.md"]

    lm = luodi.load(tar, cache_dir=tmp_path)
    assert _ids(lm) == _ids(luodi.load(folder))
    (unpacked,) = tmp_path.iterdir()
    assert all(p.stat().st_mode & 0o222 == 0 for p in unpacked.iterdir() if p.is_file())  # read-only, even for root
    assert all(p.stat().st_mode & 0o222 == 0 for p in unpacked.iterdir())
    stamp = (unpacked / "model.onnx").stat().st_mtime_ns
    assert _ids(luodi.load(tar, cache_dir=tmp_path)) == _ids(lm)
    assert [unpacked] == list(tmp_path.iterdir()) and (unpacked / "model.onnx").stat().st_mtime_ns == stamp


def test_folder_bundle_verifies_and_runs(tiny_bundle, tmp_path):
    folder, _ = tiny_bundle
    out = make_bundle(folder, tmp_path / "bundle")
    report = verify_bundle(out)
    assert report["kind"] == "folder" and report["is_bundle"] and report["files"] == len(json.loads(
        (out / "manifest.json").read_text())["files"])
    assert _ids(luodi.load(out)) == _ids(luodi.load(folder))


def test_verify_reports_an_archive(tiny_bundle):
    report = verify_bundle(tiny_bundle[1])
    assert report["kind"] == "archive" and report["backend"] == "ort"
    assert report["requires"]["onnxruntime"]["installed"] is not None


def test_runtime_path_imports_no_torch_transformers_or_onnx(tiny_bundle, tmp_path):
    """The bundle loads and generates with torch unimportable, and nothing heavy is imported on the way."""
    folder, tar = tiny_bundle
    code = ("import sys, json\nfor m in ('torch', 'transformers', 'onnx', 'onnx_ir', 'onnxscript', 'yaml', 'tqdm'):\n"
            "    sys.modules[m] = None\nimport luodi\n"
            f"lm = luodi.load({str(tar)!r}, cache_dir={str(tmp_path)!r})\n"
            f"print(json.dumps(lm.generate({PROMPT!r}, max_new_tokens=12, ignore_eos=True).token_ids))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == _ids(luodi.load(folder))


def test_a_flipped_byte_is_refused_naming_the_file(tiny_bundle, tmp_path):
    _, tar = tiny_bundle
    data = bytearray(tar.read_bytes())
    with tarfile.open(tar) as t:
        member = t.getmember("model.onnx.data")
    data[member.offset_data + member.size // 2] ^= 0x01
    bad = tmp_path / "flipped.tar"
    bad.write_bytes(bytes(data))
    for check in (lambda: luodi.load(bad, cache_dir=tmp_path / "cache"), lambda: verify_bundle(bad)):
        with pytest.raises(ManifestMismatchError, match=r"model\.onnx\.data does not match its sha256"):
            check()
    assert _nothing_unpacked(tmp_path / "cache")
    assert cli_main(["verify", str(bad)]) == 1


def test_a_truncated_archive_is_refused(tiny_bundle, tmp_path):
    _, tar = tiny_bundle
    bad = tmp_path / "truncated.tar"
    bad.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(CorruptModelError, match="truncated"):
        luodi.load(bad, cache_dir=tmp_path / "cache")
    with pytest.raises(CorruptModelError, match="truncated"):
        verify_bundle(bad)


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil", "a/../../b"])
def test_members_escaping_the_folder_are_refused(tiny_bundle, tmp_path, name):
    members = _members(tiny_bundle[1])
    bad = _write_tar(tmp_path / "escape.tar", [_file("manifest.json", members["manifest.json"]),
                                               _file(name, b"owned")])
    with pytest.raises(ManifestMismatchError, match="escapes the bundle"):
        luodi.load(bad, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists() and _nothing_unpacked(tmp_path / "cache")


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE])
def test_links_and_devices_are_refused(tiny_bundle, tmp_path, kind):
    members = _members(tiny_bundle[1])
    link = tarfile.TarInfo("model.onnx")
    link.type, link.linkname = kind, "/etc/passwd"
    bad = _write_tar(tmp_path / "link.tar", [_file("manifest.json", members["manifest.json"]), (link, None)])
    with pytest.raises(ManifestMismatchError, match="link|not a regular file"):
        verify_bundle(bad)


def test_a_folder_bundle_with_a_symlink_is_refused(tiny_bundle, tmp_path):
    out = make_bundle(tiny_bundle[0], tmp_path / "bundle")
    (out / "extra").symlink_to("/etc/passwd")
    with pytest.raises(ManifestMismatchError, match="is a link"):
        verify_bundle(out)


def _tampered_copy(folder: Path, tmp_path: Path, edit) -> Path:
    """A copy of an export folder with `edit(folder)` applied and its manifest re-written to match, as an
    attacker would (not through luodi's writer, which refuses to write a manifest that fails the check)."""
    out = tmp_path / "tampered"
    out.mkdir()
    for p in folder.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    manifest = json.loads((out / "manifest.json").read_text())
    edit(out, manifest)
    manifest["files"] = file_entries(out)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_external_data_pointing_outside_is_refused(tiny_bundle, tmp_path):
    import onnx

    def point_outside(out, manifest):
        model = onnx.load(out / "model.onnx", load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = "../outside.data"
        onnx.save(model, out / "model.onnx")

    out = _tampered_copy(tiny_bundle[0], tmp_path, point_outside)
    assert external_data_locations(out / "model.onnx") == {"../outside.data"}
    for check in (lambda: luodi.load(out), lambda: verify_bundle(out), lambda: make_bundle(out, tmp_path / "b.tar")):
        with pytest.raises(ManifestMismatchError, match="escapes the bundle"):
            check()
    assert not (tmp_path / "b.tar").exists()


def test_external_data_reader_matches_onnx(tiny_bundle):
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    path = tiny_bundle[0] / "model.onnx"
    model = onnx.load(path, load_external_data=False)
    expected = {ExternalDataInfo(t).location for t in _get_all_tensors(model) if uses_external_data(t)}
    assert expected and external_data_locations(path) == expected


def test_manifest_paths_outside_the_bundle_are_refused(tiny_bundle, tmp_path):
    out = _tampered_copy(tiny_bundle[0], tmp_path, lambda out, m: m.update(model_file="../../etc/passwd"))
    with pytest.raises(ManifestMismatchError, match="escapes the bundle"):
        luodi.load(out)


def test_a_missing_runtime_names_the_extra(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_requirements, "installed_version", lambda module: None)
    with pytest.raises(LuodiError, match=r"onnxruntime, which is not installed: pip install 'luodi\[runtime-ort\]'"):
        luodi.load(tiny_bundle[1], cache_dir=tmp_path)


def test_a_runtime_below_the_minimum_is_refused(tiny_bundle, tmp_path):
    out = make_bundle(tiny_bundle[0], tmp_path / "bundle")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["requires"]["onnxruntime"] = "99.0"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LuodiError, match=r"needs onnxruntime >= 99\.0; installed is"):
        luodi.load(out)
    with pytest.raises(LuodiError, match=r"needs onnxruntime >= 99\.0"):
        verify_bundle(out)


def test_cli_bundle_verify_and_errors(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "cli.tar"
    assert cli_main(["bundle", str(tiny_bundle[0]), "--out", str(out)]) == 0
    assert cli_main(["verify", str(out)]) == 0
    assert "OK: " in capsys.readouterr().out
    assert cli_main(["bundle", str(tiny_bundle[0]), "--out", str(tiny_bundle[0] / "inside.tar")]) == 1
    assert "outside the export folder" in capsys.readouterr().err
    assert cli_main(["generate", str(out), "--prompt", PROMPT, "--max-new-tokens", "4"]) == 0
