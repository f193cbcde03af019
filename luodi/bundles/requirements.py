"""What a bundle needs installed to run: its backend's runtime package (at least the version it was made with)
and luodi itself, with errors that name the pip extra to install."""

import importlib
import importlib.metadata
import re

from .. import __version__
from ..errors import LuodiError

# backend -> (module to import, the pip extra that installs it)
RUNTIMES = {
    "ort": ("onnxruntime", "runtime-ort"),
    "openvino": ("openvino", "runtime-openvino"),
    "tensorrt": ("tensorrt_rtx", "tensorrt"),
}


def numeric_version(text: str) -> tuple[int, ...]:
    """The leading dotted numbers of a version string ("2026.4.1-20571-abc" -> (2026, 4, 1))."""
    match = re.match(r"\d+(\.\d+)*", str(text).strip())
    if not match:
        raise LuodiError(f"cannot read a version number from {text!r}")
    return tuple(int(p) for p in match.group(0).split("."))


def installed_version(module: str) -> str | None:
    """The version of an importable runtime module, or None when it is not installed."""
    try:
        return importlib.metadata.version(module.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        pass
    try:  # a differently named distribution (onnxruntime-gpu, ...) provides the module
        return str(importlib.import_module(module).__version__)
    except (ImportError, AttributeError):
        return None


def requirements_for(backend: str) -> dict:
    """The "requires" section a bundle of this backend records: {package: minimum version}, taken from what is
    installed when the bundle is made (the versions it was exported and checked with)."""
    if backend not in RUNTIMES:
        raise LuodiError(f"no bundle support for backend {backend!r} (known: {', '.join(RUNTIMES)})")
    module, extra = RUNTIMES[backend]
    requires = {"luodi": __version__}
    version = installed_version(module)
    if version is None:
        raise LuodiError(f"{module} is not installed here, so its version cannot be recorded: "
                         f"pip install 'luodi[{extra}]'")
    requires[module] = ".".join(map(str, numeric_version(version)))
    return requires


def check_requirements(requires: dict, where: str = "bundle") -> None:
    """Refuse to run when a required package is missing or older than the recorded minimum."""
    extras = {module: extra for module, extra in RUNTIMES.values()}
    for package, minimum in requires.items():
        found = __version__ if package == "luodi" else installed_version(package)
        install = f"pip install 'luodi[{extras[package]}]'" if package in extras else f"pip install -U {package}"
        if found is None:
            raise LuodiError(f"{where} runs on {package}, which is not installed: {install}")
        if numeric_version(found) < numeric_version(minimum):
            raise LuodiError(f"{where} needs {package} >= {minimum}; installed is {found}: {install}")
