"""The runtimes a manifest may require, each mapped to what installs it.

A bundle's `requires` names packages it needs at a minimum version. Those names are compared with the
installed distributions' metadata only: no module is ever imported because a manifest names it, and a name
that is not one of these is refused.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Runtime:
    """A backend's runtime: the module it provides and the pip extra of luodi that installs it."""

    module: str
    extra: str


RUNTIMES = {
    "ort": Runtime("onnxruntime", "runtime-ort"),
    "openvino": Runtime("openvino", "runtime-openvino"),
    "tensorrt": Runtime("tensorrt_rtx", "tensorrt"),
}
REQUIREMENT_NAMES = ("luodi", *(r.module for r in RUNTIMES.values()))
