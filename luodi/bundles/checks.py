"""Checks on a bundle's manifest and on the files its model refers to, shared by `luodi verify` and luodi.load.

The manifest is untrusted input: it is checked for shape before anything reads a path from it, every file
name must be a plain relative path inside the bundle, and every file the runtime will open (the model, its
ONNX external data, the OpenVINO weights, the TensorRT engine) must be one the manifest lists, so it has been
size- and checksum-checked and cannot point outside.
"""

import re
from pathlib import Path, PurePosixPath

from ..errors import ManifestMismatchError
from .onnx_external_data import external_data_locations

_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIRED = {"format_version": int, "backend": str, "model_file": str, "max_context": int, "spec": dict,
             "io": dict, "generation": dict, "files": dict}
_SPEC_INTS = ("vocab_size", "num_layers", "num_kv_heads", "head_dim", "max_context")


def check_member_name(name: str, where: str) -> str:
    """A file name inside a bundle: relative, '/'-separated, no '..', '.', empty or absolute parts."""
    path = PurePosixPath(name)
    if (not name or "\\" in name or "\x00" in name or path.is_absolute() or name != path.as_posix()
            or any(part in ("..", ".", "") for part in name.split("/"))):
        raise ManifestMismatchError(f"{where}: path {name!r} escapes the bundle or is not a plain relative path")
    return name


def check_schema(manifest: dict, where: str) -> None:
    """The keys and types the runtime relies on, and well-formed file entries."""
    for key, kind in _REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            raise ManifestMismatchError(f"{where}: manifest field {key!r} is missing or not a {kind.__name__}")
    for key in _SPEC_INTS:
        if not isinstance(manifest["spec"].get(key), int) or manifest["spec"][key] <= 0:
            raise ManifestMismatchError(f"{where}: manifest spec.{key} is missing or not a positive integer")
    requires = manifest.get("requires", {})
    if not isinstance(requires, dict) or not all(isinstance(v, str) for v in requires.values()):
        raise ManifestMismatchError(f"{where}: manifest field 'requires' must map package names to versions")
    for name, entry in manifest["files"].items():
        check_member_name(name, where)
        if (not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) or entry["bytes"] < 0
                or not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"])):
            raise ManifestMismatchError(f"{where}: manifest entry for {name} needs integer bytes and a sha256")


def referenced_files(manifest: dict) -> list[str]:
    """The files the manifest itself names for the runtime to open (before looking inside the model)."""
    names = [manifest["model_file"]]
    engine = (manifest.get("tensorrt") or {}).get("engine_file")
    if engine:
        names.append(engine)
    if manifest["model_file"].endswith(".xml"):
        names.append(str(PurePosixPath(manifest["model_file"]).with_suffix(".bin")))
    return names


def check_paths(folder: Path, manifest: dict, model_path: Path | None = None) -> None:
    """Every file the runtime opens is a listed file of the bundle; ONNX external data included.

    `model_path` reads the model from elsewhere (a copy being verified straight from a tar archive)."""
    listed = manifest["files"]
    for name in referenced_files(manifest):
        check_member_name(name, f"{folder}: the manifest's model files")
        if name not in listed:
            raise ManifestMismatchError(f"{folder}: {name} is used by the model but not listed in the manifest")
    model_file = manifest["model_file"]
    if not model_file.endswith(".onnx"):
        return
    model_dir = PurePosixPath(model_file).parent
    for location in sorted(external_data_locations(model_path or Path(folder) / model_file)):
        name = (model_dir / location).as_posix() if str(model_dir) != "." else location
        check_member_name(name, f"{folder}: {model_file}'s external data")
        if name not in listed:
            raise ManifestMismatchError(f"{folder}: {model_file} points at external data {location!r}, "
                                        "which is not a file of the bundle")
