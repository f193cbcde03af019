"""What a bundle needs installed to run: its backend's runtime package (at least the version it was made with)
and luodi itself, with errors that name the pip extra to install.

Versions come from installed distributions' metadata alone (importlib.metadata): a manifest's `requires` may
name only the runtimes in contract.REQUIREMENT_NAMES (the manifest check refuses others), and nothing is
imported because a manifest names it.
"""

import importlib.metadata
import re

from .. import __version__
from ..contract import RUNTIMES
from ..errors import LuodiError


def numeric_version(text: str) -> tuple[int, ...]:
    """The leading dotted numbers of a version string ("2026.4.1-20571-abc" -> (2026, 4, 1))."""
    match = re.match(r"\d+(\.\d+)*", str(text).strip())
    if not match:
        raise LuodiError(f"cannot read a version number from {text!r}")
    return tuple(int(p) for p in match.group(0).split("."))


def installed_version(module: str) -> str | None:
    """The version of the installed distribution that provides `module` (onnxruntime-gpu provides onnxruntime,
    tensorrt-rtx-cu12 provides tensorrt_rtx), read from package metadata; None when none is installed."""
    for distribution in importlib.metadata.packages_distributions().get(module, []):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def requirements_for(backend: str) -> dict:
    """The "requires" section a bundle of this backend records: {package: minimum version}, taken from what is
    installed when the bundle is made (the versions it was exported and checked with)."""
    if backend not in RUNTIMES:
        raise LuodiError(f"no bundle support for backend {backend!r} (known: {', '.join(RUNTIMES)})")
    runtime = RUNTIMES[backend]
    version = installed_version(runtime.module)
    if version is None:
        raise LuodiError(f"{runtime.module} is not installed here, so its version cannot be recorded: "
                         f"pip install 'luodi[{runtime.extra}]'")
    return {"luodi": __version__, runtime.module: ".".join(map(str, numeric_version(version)))}


def check_requirements(requires: dict, where: str = "bundle") -> None:
    """Refuse to run when a required package is missing or older than the recorded minimum. `requires` comes
    from a validated manifest: its names are known runtimes."""
    extras = {r.module: r.extra for r in RUNTIMES.values()}
    for package, minimum in requires.items():
        found = __version__ if package == "luodi" else installed_version(package)
        install = f"pip install 'luodi[{extras[package]}]'" if package in extras else f"pip install -U {package}"
        if found is None:
            raise LuodiError(f"{where} runs on {package}, which is not installed: {install}")
        if numeric_version(found) < numeric_version(minimum):
            raise LuodiError(f"{where} needs {package} >= {minimum}; installed is {found}: {install}")
