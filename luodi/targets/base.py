"""The target contract: what one module in luodi/targets/ provides so that export_model runs it with no branch.

A target is a module `luodi/targets/<name>.py` defining `TARGET`, a subclass of Target, beside
`configs/targets/<name>.yaml` (its name, the runtime that runs its exports as `backend`, its passes and the
compressions its --precision values select). It provides:
- `settings()`: its typed settings for a precision and the user's overrides, checked (clear errors);
- `pipeline()`: its pass list for those settings (the YAML's, edited by the precision and --passes);
- `trace_dtype()`: the dtype the decoder is traced in (fp32 unless the target traces in half precision);
- `prepare()`: changes to the canonical decoder before tracing (e.g. AWQ scales folded in);
- `quantize()`: weight quantization of the saved ONNX graph, and its manifest record;
- `lower()`: the graph to the runtime's own format (e.g. an OpenVINO IR), after the memory report;
- `build()`: what is built after the parity check (e.g. a TensorRT engine);
- `parity_backend` and `parity_unavailable()`: which runtime checks the export against transformers here;
- `triton_platform`: the Triton backend that serves its raw graph (None: generate model only).
Every hook has a default that does nothing, so a target overrides only what it needs.
"""

from dataclasses import dataclass, field
from pathlib import Path

from ..contract.manifest import BACKENDS, ModelSpec
from ..errors import LuodiError
from ..passes import resolve_pipeline


@dataclass(frozen=True)
class Settings:
    """A target's settings for one export: the precision, the YAML's compression entry for it (None: fp32),
    the pass-list edit that precision brings, and the KV cache's dtype."""

    precision: str
    compression: dict | None = None
    kv_dtype: str = "float32"
    extra: dict = field(default_factory=dict)  # the target's own typed settings (quantization, engine options)

    @property
    def pass_edit(self) -> str | None:
        """The precision's edit of the target's pass list ("-a,+b"), if any."""
        return (self.compression or {}).get("passes")


@dataclass(frozen=True)
class Lowered:
    """A graph lowered to the runtime's own format: its file, weight bytes and the manifest section."""

    model_file: str
    weight_bytes: int
    section: dict


class Target:
    """One export target; see the module docstring for what a subclass provides."""

    parity_backend: str | None = None  # the runtime that checks parity on this machine (None: the backend)
    triton_platform: str | None = None
    section: str | None = None  # the manifest section this target writes (None: none)

    def __init__(self, config: dict):
        """The target on its YAML, which names it and the runtime that runs its exports (`backend`)."""
        self.config = config
        self.name = config["name"]
        self.backend = config["backend"]  # the runtime that runs the export (luodi.runtimes)
        if self.backend not in BACKENDS:
            raise LuodiError(f"configs/targets/{self.name}.yaml: backend {self.backend!r} is not one of "
                             f"{', '.join(BACKENDS)}")
        self.parity_backend = type(self).parity_backend or self.backend
        self.passes = list(config.get("passes", []))
        self.compressions = dict(config.get("compression") or {})
        self.default_precision = config.get("precision", "fp32")

    def precisions(self) -> list[str]:
        """The --precision values this target takes."""
        return ["fp32", *self.compressions]

    def compression(self, precision: str) -> dict | None:
        """The YAML's compression entry for `precision` (None for fp32), or a clear error."""
        if precision == "fp32":
            return None
        if precision not in self.compressions:
            raise LuodiError(f"precision {precision!r} is not available for target {self.name}; available: "
                             f"{', '.join(self.precisions())}")
        return dict(self.compressions[precision])

    def base_settings(self, precision: str | None) -> Settings:
        """The precision (default the YAML's) and its compression entry, checked."""
        precision = precision or self.default_precision
        return Settings(precision, self.compression(precision))

    def refuse_quantization(self, settings: Settings, quantization: dict | None) -> None:
        """A one-line error for quantization overrides these settings do not take."""
        if quantization:
            raise LuodiError("quantization settings (method, group size, calibration) apply to the int4/int8 "
                             f"precisions of the ort and openvino targets, not to {self.name} {settings.precision}")

    def settings(self, precision: str | None, quantization: dict | None, engine) -> Settings:
        """The typed settings of one export. The default takes no quantization overrides."""
        settings = self.base_settings(precision)
        self.refuse_quantization(settings, quantization)
        return settings

    def pipeline(self, settings: Settings, edit: str | None) -> list[str]:
        """The pass list: the YAML's, edited by the precision's entry, then by --passes."""
        return resolve_pipeline(resolve_pipeline(self.passes, settings.pass_edit), edit)

    def trace_dtype(self, settings: Settings) -> str | None:
        """The torch dtype name the decoder is traced in (None: fp32)."""
        return None

    def steps(self, settings: Settings) -> dict[str, str]:
        """{hook: progress label} of the hooks that do work for these settings (quantize, lower, build)."""
        return {}

    def prepare(self, canonical, settings: Settings) -> dict | None:
        """Change the canonical decoder before tracing; returns what the manifest records of it."""
        return None

    def quantize(self, onnx_path: Path, spec: ModelSpec, settings: Settings, kv_cache: str, prepared) -> dict | None:
        """Quantize the saved graph's weights in place; returns the manifest's record (None: nothing done)."""
        return None

    def lower(self, onnx_path: Path, folder: Path, spec: ModelSpec, settings: Settings) -> Lowered | None:
        """Turn the saved graph into the runtime's own format in `folder` (None: the ONNX graph is the model)."""
        return None

    def build(self, onnx_path: Path, folder: Path, spec: ModelSpec, settings: Settings) -> dict | None:
        """Build what follows the parity check (None: nothing); returns the manifest section's content."""
        return None

    def parity_unavailable(self, settings: Settings) -> str | None:
        """Why this export cannot be checked against transformers on this machine (None: it can)."""
        return None
