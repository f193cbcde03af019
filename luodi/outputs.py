"""The one rule for output paths: `luodi export`, `bundle` and `triton` write where nothing is, into an empty
folder, or (with --force, `force=True`) over their own earlier output of the same kind; never over anything
else, so no command deletes or overwrites what it did not create.

How an earlier output is recognised:
- export folder: manifest.json with "format": "luodi-export" and no "bundle" key;
- bundle folder: the same manifest with a "bundle" key; bundle archive: a tar whose first member is such
  a manifest.json;
- Triton model folder: config.pbtxt beside TRITON_MARKER, a small JSON file `luodi triton` writes;
- compressed model folder (`luodi compress`): config.json beside compression.json (luodi/compress/record.py).
A link is never recognised as an output (replacing it would not replace what it points to).
"""

import contextlib
import json
import tarfile
from pathlib import Path

from . import __version__
from .errors import LuodiError
from .fileio import atomic_folder
from .contract.manifest import is_bundle_json
from .manifest import MANIFEST, parse_manifest_json

EXPORT_FOLDER = "export folder"
BUNDLE_FOLDER = "bundle folder"
BUNDLE_ARCHIVE = "bundle archive"
TRITON_MODEL = "Triton model folder"
COMPRESSED_MODEL = "compressed model folder"
TRITON_MARKER = "luodi-triton.json"
_TRITON_FORMAT = "luodi-triton-model"


def _parsed(raw: bytes | None) -> dict | None:
    """A luodi manifest's content, or None (no bytes, not JSON, not a luodi manifest)."""
    try:
        return parse_manifest_json(raw, "") if raw is not None else None
    except LuodiError:
        return None


def _archive_manifest(path: Path) -> bytes | None:
    """The first member's bytes when it is manifest.json (a bundle archive's layout), else None."""
    from .bundles.unpack import MAX_MANIFEST_BYTES

    with contextlib.suppress(Exception), tarfile.open(path, "r:*") as tar:
        first = tar.next()
        if first is not None and first.name == MANIFEST and first.isfile() and first.size <= MAX_MANIFEST_BYTES:
            return tar.extractfile(first).read()
    return None


def _is_triton_model(path: Path) -> bool:
    try:
        marker = json.loads((path / TRITON_MARKER).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("format") == _TRITON_FORMAT and (path / "config.pbtxt").is_file()


def _folder_manifest(path: Path) -> dict | None:
    try:
        return _parsed((path / MANIFEST).read_bytes())
    except OSError:
        return None


def output_kind(path: Path) -> str | None:
    """Which luodi output `path` holds (EXPORT_FOLDER, BUNDLE_FOLDER, BUNDLE_ARCHIVE, TRITON_MODEL, COMPRESSED_MODEL),
    or None:
    absent, a link, or anything luodi did not write."""
    path = Path(path)
    if path.is_symlink():
        return None
    if path.is_file():
        manifest = _parsed(_archive_manifest(path))
        return BUNDLE_ARCHIVE if manifest is not None and is_bundle_json(manifest) else None
    if not path.is_dir():
        return None
    if _is_triton_model(path):
        return TRITON_MODEL
    from .compress.record import is_compressed_model

    if is_compressed_model(path):
        return COMPRESSED_MODEL
    manifest = _folder_manifest(path)
    if manifest is None:
        return None
    return BUNDLE_FOLDER if is_bundle_json(manifest) else EXPORT_FOLDER


def _is_free(path: Path, kind: str) -> bool:
    """Nothing at `path`, or an empty folder where a folder is to be written: nothing would be lost."""
    if not path.exists() and not path.is_symlink():
        return True
    return kind != BUNDLE_ARCHIVE and path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def claim_output(path: Path, kind: str, force: bool = False, option: str = "--out") -> None:
    """Refuse, with a one-line LuodiError, to write a `kind` output at `path` unless the path is free or,
    with `force`, holds luodi's own earlier output of the same kind. `option` names what to change."""
    path = Path(path)
    if _is_free(path, kind):
        return
    found = output_kind(path)
    if found != kind:
        what = f"a luodi {found}, not a luodi {kind}" if found else f"not a luodi {kind}"
        raise LuodiError(f"{path} exists and is {what}; luodi replaces only its own earlier output: choose "
                         f"another {option}")
    if not force:
        raise LuodiError(f"{path} is an earlier luodi {kind}; pass --force (force=True) to replace it")


@contextlib.contextmanager
def output_folder(path: Path, kind: str, force: bool = False, option: str = "--out"):
    """atomic_folder for a `kind` output: the path is claimed now (before any work) and again just before the
    finished folder replaces what is there, so an output that appeared meanwhile is not lost either."""
    claim_output(path, kind, force, option)
    with atomic_folder(path, check=lambda final: claim_output(final, kind, force, option)) as tmp:
        yield tmp


def write_triton_marker(model_folder: Path, bundle_name: str) -> None:
    """Mark a Triton model folder as written by `luodi triton` (so a later run may replace it, with --force)."""
    marker = {"format": _TRITON_FORMAT, "luodi_version": __version__, "bundle": bundle_name}
    (Path(model_folder) / TRITON_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
