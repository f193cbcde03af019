"""manifest.json: writing an export folder's, reading one as the typed contract.Manifest (every field checked),
and the check that its files are what it says."""

import json
import time
from pathlib import Path

from .contract import schema
from .contract.manifest import FORMAT, FORMAT_VERSION, MANIFEST, Manifest, is_manifest_json
from .errors import CorruptModelError, ManifestMismatchError
from .fileio import sha256_file, write_text_atomic


def file_entries(folder: Path) -> dict:
    """{relative name: {bytes, sha256}} for every file in folder except the manifest itself."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _framed(content: dict, files: dict, created: str | None = None) -> dict:
    """The manifest's JSON: format, creation time, the content, then the listed files."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "created": created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **content, "files": files}


def draft_manifest(content: dict, where: str) -> Manifest:
    """The typed manifest of an export being made (what its parity check opens the runtime from): every field
    read and checked, but not yet the checks across fields that only a finished manifest passes (its files are
    listed and its build section written when write_manifest checks it whole)."""
    return schema.read(Manifest, _framed(content, {}), f"{where} (being written)")


def write_manifest(folder: Path, content: dict) -> Manifest:
    """Write folder/manifest.json: content plus format, creation time and the sha256 of every file. What is
    written passes the same field-by-field check (contract.Manifest) a reader makes; returns it typed."""
    manifest = _framed(content, file_entries(folder))
    typed = Manifest.from_json(manifest, f"{folder} (being written)")
    write_text_atomic(Path(folder) / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return typed


def parse_manifest_json(text: str | bytes, where: str) -> dict:
    """A manifest's parsed JSON, not yet validated (a bundle carries its export's as written), or a clear error
    when it is not JSON or not a luodi manifest."""
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: JSON nested deeper than Python's stack
        raise ManifestMismatchError(f"{where}: not valid JSON ({e})") from None
    if not is_manifest_json(manifest):
        raise ManifestMismatchError(f"{where}: not a {FORMAT} manifest")
    return manifest


def parse_manifest(text: str | bytes, where: str) -> Manifest:
    """A manifest's typed form, every field checked, or a one-line error naming the first problem."""
    return Manifest.from_json(parse_manifest_json(text, where), where)


def read_manifest_json(folder: Path) -> dict:
    """The parsed, not yet validated JSON of an export folder's manifest (what a bundle copies), or a clear error."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise CorruptModelError(f"{folder}: not a luodi export folder (no {MANIFEST})")
    return parse_manifest_json(path.read_bytes(), str(path))


def read_manifest(folder: Path, where: str | None = None) -> Manifest:
    """The typed manifest of an export folder or bundle folder, every field checked, or a clear error naming
    `where` (default the manifest's path)."""
    return Manifest.from_json(read_manifest_json(folder), where or str(Path(folder) / MANIFEST))


def verify_files(folder: Path, manifest: Manifest, checksums: bool = True) -> None:
    """Check every file the manifest lists: present, inside the folder, the right size and (by default) sha256."""
    root = Path(folder).resolve()
    for name, entry in manifest.files.items():
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            raise ManifestMismatchError(f"{folder}: manifest entry {name!r} escapes the folder")
        if not path.is_file():
            raise CorruptModelError(f"{folder}: missing file {name}")
        size = path.stat().st_size
        if size != entry.bytes:
            raise CorruptModelError(f"{folder}: {name} is {size} bytes, manifest says {entry.bytes} "
                                    "(truncated or replaced)")
        if checksums and sha256_file(path) != entry.sha256:
            raise ManifestMismatchError(f"{folder}: {name} does not match its sha256 in {MANIFEST}")
