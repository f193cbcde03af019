"""Where luodi keeps its cache and finds its configs."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder ($LUODI_CACHE, default ~/.cache/luodi): downloaded wheels and converted models."""
    return Path(os.environ.get("LUODI_CACHE", Path.home() / ".cache" / "luodi")).expanduser()


def configs_dir() -> Path:
    """The configs folder ($LUODI_CONFIGS, default the repository's configs/ next to the package)."""
    env = os.environ.get("LUODI_CONFIGS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "configs"
