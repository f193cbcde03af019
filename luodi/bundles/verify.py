"""`luodi verify`: everything about a bundle (archive or folder) that can be checked without running it."""

import tempfile
from pathlib import Path

from .. import __version__
from ..contract import Manifest
from ..manifest import read_manifest
from .checks import check_folder, graph_files, referenced_files
from .requirements import check_requirements, installed_version
from .unpack import read_archive_manifest, scan_archive


def _check_folder(folder: Path) -> Manifest:
    manifest = read_manifest(folder)
    check_folder(folder, manifest)
    return manifest


def _check_archive(path: Path) -> Manifest:
    """Every member checked as it is read; the files that name other files (graphs, the model) kept aside so
    the same reference check as a folder's reads them."""
    manifest, _ = read_archive_manifest(path)
    readable = {manifest.model_file, *graph_files(manifest)}
    with tempfile.TemporaryDirectory(prefix="luodi-verify-") as tmp:
        kept = {name: Path(tmp) / str(i) for i, name in enumerate(sorted(readable))}
        scan_archive(path, kept.get)
        referenced_files(manifest, kept.__getitem__, str(path))
    return manifest


def verify_bundle(path: Path) -> dict:
    """Check a bundle: every manifest field, every file's size and sha256, every file the model refers to
    (ONNX external data, OpenVINO weights, engine, embedding table, tokenizer) listed and inside, and the
    installed runtime versions against the manifest's minimums. Raises a LuodiError naming the first problem;
    returns a summary when all pass. luodi.load runs the same checks."""
    path = Path(path)
    manifest = _check_folder(path) if path.is_dir() else _check_archive(path)
    requires = manifest.requires
    check_requirements(requires, where=str(path))
    installed = {k: {"minimum": v, "installed": __version__ if k == "luodi" else installed_version(k)}
                 for k, v in requires.items()}
    return {"bundle": str(path), "kind": "folder" if path.is_dir() else "archive", "backend": manifest.backend,
            "model": manifest.source.name if manifest.source else None, "precision": manifest.precision,
            "files": len(manifest.files), "bytes": manifest.total_bytes, "requires": installed,
            "is_bundle": manifest.bundle is not None}
