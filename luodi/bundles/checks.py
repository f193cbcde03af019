"""The one check of every file a bundle or export refers to, shared by `luodi verify`, luodi.load, `luodi bundle`
and `luodi triton`.

The manifest is untrusted: it arrives here as a contract.Manifest, read field by field before anything uses it
(luodi.manifest.read_manifest, unpack.read_archive_manifest). Then every file the runtime, the tokenizer or Triton may open (the model file whatever its name, every
external-data location in every graph file, the OpenVINO weights, the TensorRT engine, the embedding table,
the tokenizer files) must be a plain relative name that the manifest lists, so it has been size- and
checksum-checked; in a folder each listed file must also be a regular file inside it, reached through no link.
"""

import os
import stat
from pathlib import Path, PurePosixPath

from ..contract import Manifest, member_name_problem
from ..errors import CorruptModelError, ManifestMismatchError
from ..manifest import MANIFEST, verify_files
from ..tokenizer import TOKENIZER_FILES
from .onnx_external_data import external_data_locations

ONNX_BACKENDS = ("ort", "tensorrt")  # backends whose model file is an ONNX graph, whatever its name


def check_member_name(name: str, where: str) -> str:
    """A file name inside a bundle: relative, '/'-separated, no '..', '.', empty or absolute parts."""
    if problem := member_name_problem(name):
        raise ManifestMismatchError(f"{where}: {problem}")
    return name


def graph_files(manifest: Manifest) -> list[str]:
    """The files read as ONNX graphs: the model file of an ONNX backend and every listed `.onnx` file."""
    names = [manifest.model_file] if manifest.backend in ONNX_BACKENDS else []
    return names + sorted(n for n in manifest.files if n.endswith(".onnx") and n not in names)


def external_data_files(manifest: Manifest, graph_path) -> dict[str, list[str]]:
    """{graph file: the bundle files its tensors' external data name}, each name checked to stay inside.
    `graph_path(name)` gives where to read a graph file (the folder, or a copy taken out of an archive)."""
    found = {}
    for graph in graph_files(manifest):
        parent = PurePosixPath(graph).parent
        names = []
        for location in sorted(external_data_locations(graph_path(graph))):
            name = check_member_name(location, f"{graph}'s external data location")
            names.append((parent / name).as_posix() if str(parent) != "." else name)
        found[graph] = names
    return found


def _openvino_weights(manifest: Manifest, model_path: Path) -> list[str]:
    """An OpenVINO model file must be an IR (.xml, XML inside); OpenVINO reads its weights from the .bin beside it."""
    model_file = manifest.model_file
    with open(model_path, "rb") as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not model_file.endswith(".xml") or not head.startswith(b"<"):
        raise CorruptModelError(f"{model_file}: an openvino bundle's model must be an OpenVINO IR (.xml)")
    return [str(PurePosixPath(model_file).with_suffix(".bin"))]


def referenced_files(manifest: Manifest, file_path, where: str) -> list[str]:
    """Every bundle file the runtime, the tokenizer or Triton may open, read from the manifest and from inside
    the graph files, each checked to be listed before it is read. `file_path(name)` gives where a listed
    model or graph file can be read (the folder, or a copy taken out of an archive)."""
    names = [manifest.model_file, *manifest.tokenizer_files, TOKENIZER_FILES[0]]
    if manifest.tensorrt and manifest.tensorrt.engine_file:
        names.append(manifest.tensorrt.engine_file)
    if manifest.embedding_table:
        names.append(manifest.embedding_table.file)
    check_listed(names, manifest, where)
    if manifest.backend == "openvino":
        names += _openvino_weights(manifest, file_path(manifest.model_file))
    for data in external_data_files(manifest, file_path).values():
        names += data
    names = list(dict.fromkeys(names))
    check_listed(names, manifest, where)
    return names


def check_listed(names: list[str], manifest: Manifest, where: str) -> None:
    """Each referenced name is a plain relative name the manifest lists (so it was size- and sha256-checked)."""
    for name in names:
        check_member_name(name, where)
        if name not in manifest.files:
            raise ManifestMismatchError(f"{where}: {name} is used by the model but is not a listed file of "
                                        "the bundle")


def _regular_inside(root: Path, name: str) -> None:
    """folder/name is a regular file reached through no link, inside the folder."""
    path = root
    for part in name.split("/"):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise CorruptModelError(f"{root}: missing file {name}") from None
        if stat.S_ISLNK(mode):
            raise ManifestMismatchError(f"{root}: {name} goes through a link; bundles hold regular files only")
    if not stat.S_ISREG(mode):
        raise ManifestMismatchError(f"{root}: {name} is not a regular file")
    if os.lstat(path).st_nlink != 1:
        raise ManifestMismatchError(f"{root}: {name} is a hard link (it may be a file outside the bundle)")


def check_folder(folder: Path, manifest: Manifest, checksums: bool = True) -> list[str]:
    """The one check of a bundle or export folder (the folder's typed manifest): no link anywhere in it and
    no file it does not list (so nothing unlisted is ever opened or copied), every listed file regular, inside
    and not hard-linked, every file the model, tokenizer or Triton opens listed, then every listed file's size and (unless checksums=False) sha256.
    Returns the referenced files."""
    root = Path(folder)
    for path in root.rglob("*"):
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise ManifestMismatchError(f"{root}: {name} is a link; bundles hold regular files only")
        if not path.is_dir() and name != MANIFEST and name not in manifest.files:
            raise ManifestMismatchError(f"{root}: {name} is not a listed file of the bundle; a bundle folder holds "
                                        "its listed files and nothing else")
    for name in manifest.files:
        _regular_inside(root, check_member_name(name, str(root)))
    names = referenced_files(manifest, lambda name: root / name, str(root))
    verify_files(root, manifest, checksums)
    return names
