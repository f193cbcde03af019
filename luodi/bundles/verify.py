"""`luodi verify`: everything about a bundle (archive or folder) that can be checked without running it."""

import tempfile
from pathlib import Path

from .. import __version__
from ..errors import ManifestMismatchError
from ..manifest import read_manifest, verify_files
from .checks import check_paths, check_schema
from .requirements import check_requirements, installed_version
from .unpack import scan_archive


def _check_folder(folder: Path) -> dict:
    links = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_symlink()]
    if links:
        raise ManifestMismatchError(f"{folder}: {links[0]} is a link; bundles hold regular files only")
    manifest = read_manifest(folder)
    check_schema(manifest, str(folder))
    verify_files(folder, manifest)
    check_paths(folder, manifest)
    return manifest


def _check_archive(path: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="luodi-verify-") as tmp:
        keep = {}

        def model_only(name: str):
            if name.endswith(".onnx"):  # read for its external-data paths; weights are only hashed
                keep[name] = Path(tmp) / f"{len(keep)}.onnx"
                return keep[name]
            return None

        manifest, _ = scan_archive(path, model_only)
        check_paths(path, manifest, keep.get(manifest["model_file"]))
    return manifest


def verify_bundle(path: Path) -> dict:
    """Check a bundle: manifest schema, every file's size and sha256, every path inside the bundle (ONNX
    external data and OpenVINO weights included) and the installed runtime versions against the manifest's
    minimums. Raises a LuodiError naming the first problem; returns a summary when all pass."""
    path = Path(path)
    manifest = _check_folder(path) if path.is_dir() else _check_archive(path)
    requires = manifest.get("requires", {})
    check_requirements(requires, where=str(path))
    return {"bundle": str(path), "kind": "folder" if path.is_dir() else "archive", "backend": manifest["backend"],
            "model": manifest.get("source", {}).get("name"), "precision": manifest.get("precision"),
            "files": len(manifest["files"]), "bytes": sum(e["bytes"] for e in manifest["files"].values()),
            "requires": {k: {"minimum": v, "installed": __version__ if k == "luodi" else installed_version(k)}
                         for k, v in requires.items()},
            "is_bundle": "bundle" in manifest}
