"""Backends (one per runtime) and the decode loop they share; open_backend picks the one an export needs."""

from dataclasses import dataclass
from pathlib import Path

from ..contract.manifest import Manifest
from ..errors import LuodiError

MAX_THREADS = 1024  # far above any CPU's cores; a runtime asked for millions of threads exhausts memory


def check_threads(threads) -> int | None:
    """A thread count (None: the runtime's default), or an error for anything but an integer in 1..MAX_THREADS."""
    if threads is None or (isinstance(threads, int) and not isinstance(threads, bool) and
                           1 <= threads <= MAX_THREADS):
        return threads
    raise LuodiError(f"threads must be an integer in 1..{MAX_THREADS}, got {threads!r}")


@dataclass(frozen=True)
class RuntimeOptions:
    """How the caller wants a backend run: threads, OpenVINO's device, inference precision and exact mode (no
    speed-for-accuracy heuristics: the parity check), ONNX Runtime's execution providers."""

    threads: int | None = None
    device: str = "CPU"
    providers: list[str] | None = None
    inference_precision: str = "f32"
    exact: bool = False


def _open_ort(folder: Path, manifest: Manifest, options: RuntimeOptions):
    from .onnxruntime import OrtBackend

    return OrtBackend(folder / manifest.model_file, manifest.spec, manifest.kv_cache, threads=options.threads,
                      providers=options.providers, embedding_table=manifest.embedding_table, facts=manifest.facts)


def _open_openvino(folder: Path, manifest: Manifest, options: RuntimeOptions):
    from .openvino import OpenVinoBackend

    return OpenVinoBackend(folder / manifest.model_file, manifest.spec, device=options.device,
                           threads=options.threads, fp32=manifest.precision == "fp32",
                           precision=options.inference_precision, exact=options.exact, facts=manifest.facts)


def _open_tensorrt(folder: Path, manifest: Manifest, options: RuntimeOptions):
    from .tensorrt import open_tensorrt

    return open_tensorrt(folder, manifest)


OPENERS = {"ort": _open_ort, "openvino": _open_openvino, "tensorrt": _open_tensorrt}


def open_backend(folder: Path, manifest: Manifest, kind: str | None = None, threads: int | None = None,
                 device: str = "CPU", providers: list[str] | None = None, inference_precision: str = "f32",
                 exact: bool = False):
    """The backend that runs an export folder's model (its manifest's backend unless `kind` is given), looked up
    in OPENERS; each backend takes the manifest's facts (logits window, weight bytes, source) when it is built.
    `device`, `inference_precision` (f32, bf16, f16) and `exact` set up OpenVINO, `providers` ONNX Runtime's
    execution providers."""
    check_threads(threads)
    kind = kind or manifest.backend
    if kind not in OPENERS:
        raise LuodiError(f"backend {kind!r} is not available; this build supports: {', '.join(OPENERS)}, torch")
    options = RuntimeOptions(threads, device, providers, inference_precision, exact)
    return OPENERS[kind](Path(folder), manifest, options)
