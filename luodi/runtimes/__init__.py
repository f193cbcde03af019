"""Backends (one per runtime) and the decode loop they share; open_backend picks the one an export needs."""

from pathlib import Path

from ..errors import LuodiError

BACKENDS = ("ort", "openvino", "tensorrt")


def open_backend(folder: Path, manifest: dict, kind: str | None = None, threads: int | None = None,
                 device: str = "CPU", providers: list[str] | None = None):
    """The backend that runs an export folder's model (its manifest's backend unless `kind` is given);
    `device` picks the OpenVINO device, `providers` ONNX Runtime's execution providers."""
    kind = kind or manifest["backend"]
    model, spec = Path(folder) / manifest["model_file"], {**manifest["spec"]}
    if kind == "tensorrt":
        from .tensorrt import open_tensorrt

        return open_tensorrt(Path(folder), manifest)
    if kind == "ort":
        from .onnxruntime import OrtBackend

        return OrtBackend(model, spec, manifest.get("kv_cache", "concat"), threads=threads,
                           providers=providers)
    if kind == "openvino":
        from .openvino import OpenVinoBackend

        return OpenVinoBackend(model, spec, device=device, threads=threads,
                               fp32=manifest.get("precision", "fp32") == "fp32")
    raise LuodiError(f"backend {kind!r} is not available; this build supports: {', '.join(BACKENDS)}, torch")
