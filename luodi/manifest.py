"""manifest.json: what an export folder holds, and the check that its files are what it says."""

import json
import time
from pathlib import Path

from .contract.manifest import FORMAT, FORMAT_VERSION, MANIFEST, Manifest
from .errors import CorruptModelError, ManifestMismatchError
from .fileio import sha256_file, write_text_atomic



def file_entries(folder: Path) -> dict:
    """{relative name: {bytes, sha256}} for every file in folder except the manifest itself."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_manifest(folder: Path, content: dict) -> dict:
    """Write folder/manifest.json: content plus format, creation time and the sha256 of every file. What is
    written passes the same field-by-field check (contract.Manifest) a reader makes."""
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **content,
                "files": file_entries(folder)}
    Manifest.from_json(manifest, f"{folder} (being written)")
    write_text_atomic(Path(folder) / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def parse_manifest(text: str | bytes, where: str) -> dict:
    """A manifest's parsed content, or a clear error when it is not JSON or not a luodi manifest."""
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: JSON nested deeper than Python's stack
        raise ManifestMismatchError(f"{where}: not valid JSON ({e})") from None
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or not isinstance(manifest.get("files"), dict)):
        raise ManifestMismatchError(f"{where}: not a {FORMAT} manifest")
    return manifest


def read_manifest(folder: Path) -> dict:
    """The parsed manifest of an export folder, or a clear error."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise CorruptModelError(f"{folder}: not a luodi export folder (no {MANIFEST})")
    return parse_manifest(path.read_bytes(), str(path))


def verify_files(folder: Path, manifest: dict, checksums: bool = True) -> None:
    """Check every file the manifest lists: present, inside the folder, the right size and (by default) sha256."""
    root = Path(folder).resolve()
    for name, entry in manifest["files"].items():
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            raise ManifestMismatchError(f"{folder}: manifest entry {name!r} escapes the folder")
        if not path.is_file():
            raise CorruptModelError(f"{folder}: missing file {name}")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CorruptModelError(f"{folder}: {name} is {size} bytes, manifest says {entry['bytes']} "
                                    "(truncated or replaced)")
        if checksums and sha256_file(path) != entry["sha256"]:
            raise ManifestMismatchError(f"{folder}: {name} does not match its sha256 in {MANIFEST}")
