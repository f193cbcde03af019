"""Export targets, one module each (ort.py, openvino.py, trt.py) beside configs/targets/<name>.yaml; base.py
says what a target module provides. Adding a target is one new module plus its YAML: get_target finds both
by name, with no list to edit."""

import importlib
import importlib.util
import re

import yaml

from ..errors import LuodiError
from ..paths import configs_dir
from .base import Lowered, Settings, Target


def target_names() -> list[str]:
    """The targets with both a config and a module."""
    configs = sorted(p.stem for p in (configs_dir() / "targets").glob("*.yaml"))
    return [name for name in configs if importlib.util.find_spec(f"{__name__}.{name}") is not None]


def get_target(name: str) -> Target:
    """The target called `name`: its module's TARGET built on its YAML, or a clear error naming the targets."""
    path = configs_dir() / "targets" / f"{name}.yaml"
    if not re.fullmatch(r"[a-z][a-z0-9_]*", str(name)) or not path.is_file() or name not in target_names():
        raise LuodiError(f"unknown or not yet available target {name!r}; available: {', '.join(target_names())}")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or config.get("name") != name:
        raise LuodiError(f"{path}: its name must be {name!r}, the file's")
    return importlib.import_module(f"{__name__}.{name}").TARGET(config)


__all__ = ["Target", "Settings", "Lowered", "get_target", "target_names"]
