"""Backends (one per runtime) and the decode loop they share; open_backend picks the one an export needs."""

from pathlib import Path

from ..errors import LuodiError

BACKENDS = ("ort", "openvino", "tensorrt")
MAX_THREADS = 1024  # far above any CPU's cores; a runtime asked for millions of threads exhausts memory


def check_threads(threads) -> int | None:
    """A thread count (None: the runtime's default), or an error for anything but an integer in 1..MAX_THREADS."""
    if threads is None or (isinstance(threads, int) and not isinstance(threads, bool) and
                           1 <= threads <= MAX_THREADS):
        return threads
    raise LuodiError(f"threads must be an integer in 1..{MAX_THREADS}, got {threads!r}")


def open_backend(folder: Path, manifest: dict, kind: str | None = None, threads: int | None = None,
                 device: str = "CPU", providers: list[str] | None = None, inference_precision: str = "f32",
                 exact: bool = False):
    """The backend that runs an export folder's model (its manifest's backend unless `kind` is given);
    `device`, `inference_precision` (f32, bf16, f16) and `exact` (no speed-for-accuracy heuristics: the parity
    check) set up OpenVINO, `providers` ONNX Runtime's execution providers."""
    check_threads(threads)
    kind = kind or manifest["backend"]
    model, spec = Path(folder) / manifest["model_file"], {**manifest["spec"]}
    backend = None
    if kind == "tensorrt":
        from .tensorrt import open_tensorrt

        backend = open_tensorrt(Path(folder), manifest)
    elif kind == "ort":
        from .onnxruntime import OrtBackend

        backend = OrtBackend(model, spec, manifest.get("kv_cache", "concat"), threads=threads,
                             providers=providers, embedding_table=manifest.get("embedding_table"))
    elif kind == "openvino":
        from .openvino import OpenVinoBackend

        backend = OpenVinoBackend(model, spec, device=device, threads=threads,
                                  fp32=manifest.get("precision", "fp32") == "fp32",
                                  precision=inference_precision, exact=exact)
    if backend is not None:
        # exports before the logits window kept the last position only ("logits": "last")
        backend.logits_window = manifest.get("logits_window", 1 if manifest.get("logits") == "last" else None)
        backend.weight_bytes = manifest.get("memory", {}).get("weight_bytes")
        backend.source = manifest.get("source", {}).get("sha256")
        return backend
    raise LuodiError(f"backend {kind!r} is not available; this build supports: {', '.join(BACKENDS)}, torch")
