"""Reading a bundle archive safely: one pass that checks every member, and the read-only unpack cache.

A member must be a regular file whose plain relative name the manifest lists, with the listed size and
sha256: absolute paths, '..', links, devices, duplicates and unlisted members are refused before a byte of
them is written (stricter than tarfile's "data" filter, which is applied as well). The manifest is the
archive's first member, so the whole check is one sequential read, and nothing is ever unpickled.
"""

import hashlib
import logging
import re
import shutil
import tarfile
import zlib
from pathlib import Path

from ..contract import Manifest
from ..contract.manifest import FileEntry
from ..errors import CorruptModelError, LuodiError, ManifestMismatchError
from ..fileio import atomic_folder
from ..manifest import MANIFEST, parse_manifest_json, verify_files
from ..paths import cache_dir
from .checks import check_member_name

log = logging.getLogger(__name__)
MAX_MANIFEST_BYTES = 16 << 20
_CHUNK = 1 << 22
_DAMAGED = (tarfile.TarError, EOFError, zlib.error)


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (*_DAMAGED, OSError) as e:
        raise CorruptModelError(f"{path}: not a readable tar archive ({e})") from None


def _read_manifest_member(tar: tarfile.TarFile, where: str) -> tuple[Manifest, bytes]:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile() or first.size > MAX_MANIFEST_BYTES:
        raise CorruptModelError(f"{where}: not a luodi bundle (its first member must be {MANIFEST})")
    raw = tar.extractfile(first).read()
    return Manifest.from_json(parse_manifest_json(raw, f"{where}:{MANIFEST}"), where), raw


def read_archive_manifest(path: Path) -> tuple[Manifest, bytes]:
    """A bundle archive's manifest (its first member), validated field by field, and its raw bytes."""
    with _open(path) as tar:
        try:
            return _read_manifest_member(tar, str(path))
        except _DAMAGED as e:
            raise CorruptModelError(f"{path}: truncated or damaged archive ({e})") from None


def _check_member(member: tarfile.TarInfo, manifest: Manifest, seen: set, where: str) -> FileEntry:
    name = check_member_name(member.name, where)
    if member.issym() or member.islnk():
        raise ManifestMismatchError(f"{where}: member {name} is a link; bundles hold regular files only")
    if not member.isfile():
        raise ManifestMismatchError(f"{where}: member {name} is not a regular file; bundles hold nothing else")
    try:
        tarfile.data_filter(member, "/bundle")
    except tarfile.FilterError as e:
        raise ManifestMismatchError(f"{where}: member {name} refused by tarfile's data filter ({e})") from None
    if name in seen:
        raise ManifestMismatchError(f"{where}: member {name} appears twice")
    entry = manifest.files.get(name)
    if entry is None:
        raise ManifestMismatchError(f"{where}: member {name} is not listed in the manifest")
    if member.size != entry.bytes:
        raise ManifestMismatchError(f"{where}: {name} is {member.size} bytes, the manifest says {entry.bytes}")
    seen.add(name)
    return entry


def scan_archive(path: Path, destination=None) -> tuple[Manifest, bytes]:
    """Read a bundle archive once, checking every member against the manifest (its first member).

    `destination(name)` gives the path to write a member to, or None to only check it. Returns the manifest
    and its raw bytes; raises naming the first member that is unsafe, unlisted, the wrong size or the wrong
    sha256, any listed file that is missing, or the archive as truncated."""
    where = str(path)
    try:
        with _open(path) as tar:
            manifest, raw = _read_manifest_member(tar, where)
            seen: set[str] = set()
            while (member := tar.next()) is not None:
                entry = _check_member(member, manifest, seen, where)
                target = destination(member.name) if destination else None
                digest = _copy(tar.extractfile(member), target)
                if digest != entry.sha256:
                    raise ManifestMismatchError(f"{where}: {member.name} does not match its sha256 in {MANIFEST} "
                                                "(modified or corrupt)")
    except _DAMAGED as e:
        raise CorruptModelError(f"{where}: truncated or damaged archive ({e})") from None
    missing = sorted(set(manifest.files) - seen)
    if missing:
        raise CorruptModelError(f"{where}: the archive lacks {', '.join(missing)} (truncated?)")
    return manifest, raw


def _copy(source, target: Path | None) -> str:
    digest = hashlib.sha256()
    out = None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(target, "xb")
    try:
        while block := source.read(_CHUNK):
            digest.update(block)
            if out:
                out.write(block)
    finally:
        if out:
            out.close()
    return digest.hexdigest()


_CACHE_NAME = re.compile(r"[A-Za-z0-9._-]+-[0-9a-f]{16}")


def _cache_folder(path: Path, raw_manifest: bytes, cache: Path) -> Path:
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", re.sub(r"(\.tar|\.tar\.gz|\.tgz)$", "", path.name)) or "bundle"
    return cache / f"{stem}-{hashlib.sha256(raw_manifest).hexdigest()[:16]}"


def _make_read_only(folder: Path) -> None:
    for item in folder.rglob("*"):
        if item.is_file():
            item.chmod(0o444)


def _reusable(folder: Path, manifest: Manifest, raw_manifest: bytes, verify: bool) -> bool:
    """Whether an earlier unpack can run as it is: its manifest is the archive's and its files match it
    (sizes always, sha256 unless verify=False). A damaged or tampered one is logged and unpacked again."""
    if not (folder / MANIFEST).is_file():
        return False
    try:
        if (folder / MANIFEST).read_bytes() != raw_manifest:
            raise ManifestMismatchError(f"{folder}: {MANIFEST} differs from the archive's")
        verify_files(folder, manifest, checksums=verify)
    except (CorruptModelError, ManifestMismatchError) as e:
        log.warning("%s; unpacking the bundle again", e)
        return False
    return True


def _only_cache_folders(folder: Path) -> None:
    """atomic_folder's check: what an unpack replaces must be a folder of this cache's own naming, not a link
    or a file someone put there."""
    if folder.is_symlink() or not folder.is_dir() or not _CACHE_NAME.fullmatch(folder.name):
        raise LuodiError(f"{folder} is in the way and is not an unpacked bundle; remove it or use another cache")


def _check_free_space(path: Path, manifest: Manifest, raw_manifest: bytes, cache: Path) -> None:
    """Refuse to start an unpack that cannot fit: the manifest's declared sizes against the cache's free space."""
    cache.mkdir(parents=True, exist_ok=True)
    need = len(raw_manifest) + manifest.total_bytes
    free = shutil.disk_usage(cache).free
    if need > free:
        raise LuodiError(f"{path}: unpacking needs {need} bytes but {cache} has {free} bytes free")


def unpack_bundle(path: Path, verify: bool = True, cache: Path | None = None) -> Path:
    """The folder a bundle archive runs from: unpacked once into the cache (every member checked as it is
    written, files read-only), reused while its manifest is unchanged. A reused folder's files are checked
    against the manifest again (sizes always, sha256 unless verify=False); one that no longer matches is
    unpacked again. An unpack that would not fit in the cache's free space is refused before it starts."""
    path = Path(path)
    manifest, raw = read_archive_manifest(path)
    final = _cache_folder(path, raw, cache or cache_dir() / "bundles")
    if _reusable(final, manifest, raw, verify):
        return final
    _check_free_space(path, manifest, raw, final.parent)
    with atomic_folder(final, check=_only_cache_folders) as tmp:
        scan_archive(path, lambda name: tmp / name)
        (tmp / MANIFEST).write_bytes(raw)
        _make_read_only(tmp)
    return final
