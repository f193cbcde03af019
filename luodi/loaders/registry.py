"""Named models from configs/models/*.yaml."""

from pathlib import Path

import yaml

from ..errors import UnknownModelError
from ..paths import configs_dir


def model_configs() -> dict[str, dict]:
    """Every named model, by name, as its YAML says."""
    out = {}
    for path in sorted((configs_dir() / "models").glob("*.yaml")):
        entry = yaml.safe_load(path.read_text())
        out[entry["name"]] = entry
    return out


def model_config(name: str) -> dict:
    """One named model's config, or a clear error listing the known names."""
    configs = model_configs()
    if name not in configs:
        raise UnknownModelError(f"unknown model {name!r}: not a folder, a .gguf file or one of "
                                f"{', '.join(configs)} (see `luodi models`)")
    return configs[name]


def is_path_like(spec: str) -> bool:
    """True when a model argument names a file or folder rather than a registry entry."""
    return Path(spec).exists() or "/" in spec or spec.endswith(".gguf")
