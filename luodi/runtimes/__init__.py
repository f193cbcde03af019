"""Backends (one per runtime) and the decode loop they share; open_backend picks the one an export needs."""

from pathlib import Path

from ..errors import LuodiError

BACKENDS = ("ort", "openvino")


def open_backend(folder: Path, manifest: dict, kind: str | None = None, threads: int | None = None,
                 device: str = "CPU"):
    """The backend that runs an export folder's model (its manifest's backend unless `kind` is given)."""
    kind = kind or manifest["backend"]
    model, spec = Path(folder) / manifest["model_file"], {**manifest["spec"]}
    if kind == "ort":
        from .onnxruntime import OrtBackend

        return OrtBackend(model, spec, manifest.get("kv_cache", "concat"), threads=threads)
    if kind == "openvino":
        from .openvino import OpenVinoBackend

        return OpenVinoBackend(model, spec, device=device, threads=threads,
                               fp32=manifest.get("precision", "fp32") == "fp32")
    raise LuodiError(f"backend {kind!r} is not available; this build supports: {', '.join(BACKENDS)}, torch")
