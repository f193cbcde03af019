"""Build a TensorRT engine from the trt target's ONNX graph: `tensorrt` when importable, else TensorRT for
RTX (`tensorrt_rtx`, whose builder works without a GPU: ahead-of-time engines for a chosen compute
capability). Imported lazily, so nothing else needs TensorRT installed.

The engine gets the two optimization profiles of luodi.contract.shapes (decode, prefill), derived from
the limits the decode loop enforces. Parser and builder errors are raised with TensorRT's own messages.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import LuodiError
from ..fileio import write_bytes_atomic
from ..contract.graph import ATTENTION_MASK, INPUT_IDS, kv_names
from ..contract.manifest import ModelSpec, TensorRTInfo
from ..contract.shapes import ShapeLimits, profiles
from ..runtime_libraries import current_arch, import_tensorrt
from .trt_legality import check_legality

log = logging.getLogger(__name__)
ENGINE_FILE = "model.engine"
DEFAULT_ARCH = "sm89"  # RTX 40-series / L4 / Jetson-class Ada: the AOT target when no GPU is present


@dataclass(frozen=True)
class EngineOptions:
    """How to build: compute capability (None: the current GPU's, else DEFAULT_ARCH), workspace limit,
    timing cache file (read if present, written after the build) and the largest batch."""

    arch: str | None = None
    workspace_mb: int | None = None
    timing_cache: Path | None = None
    max_batch: int = 4


def _logger(trt):
    class _Collecting(trt.ILogger):
        """Keeps TensorRT's errors for the exception message; the rest goes to Python logging."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg.splitlines()[0][:300])
            elif severity == trt.ILogger.Severity.WARNING:
                log.debug("TensorRT: %s", msg)

    return _Collecting()


def _set_arch(trt, config, arch: str) -> None:
    if not hasattr(config, "set_compute_capability"):  # datacenter TensorRT builds for the GPU it runs on
        if arch != current_arch():
            raise LuodiError(f"{trt.__name__} builds for the present GPU only ({current_arch() or 'none'}); "
                             f"ahead-of-time builds for {arch} need TensorRT for RTX")
        return
    member = getattr(trt.ComputeCapability, arch.upper(), None)
    if member is None:
        known = [n.lower() for n in trt.ComputeCapability.__members__ if n.startswith("SM")]
        raise LuodiError(f"unknown compute capability {arch!r}; {trt.__name__} builds for {', '.join(known)}")
    config.num_compute_capabilities = 1
    config.set_compute_capability(member, 0)


def build_engine(onnx_path: Path, out_dir: Path, spec: ModelSpec, options: EngineOptions) -> dict:
    """Check the graph with TensorRT's parser, build the engine with both profiles into out_dir/model.engine;
    returns what the manifest records (engine file, TensorRT module and version, arch, profiles, time).
    Without TensorRT the static allow-list checks the graph and no engine is built (engine_file None)."""
    trt = import_tensorrt(required=False)
    checker = check_legality(onnx_path, trt)
    if trt is None:
        log.warning("TensorRT is not installed: the graph passed the %s but no engine was built "
                    "(pip install 'luodi[tensorrt]' and export again)", checker)
        return {"engine_file": None, "legality": checker, "max_batch": options.max_batch}
    arch = options.arch or current_arch() or DEFAULT_ARCH
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise LuodiError(f"TensorRT's parser rejected {onnx_path.name}: {'; '.join(logger.errors[:5])}")
    config = builder.create_builder_config()
    _set_arch(trt, config, arch)
    if options.workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    if cache_path and trt.__name__ == "tensorrt_rtx":  # its builder has no timing cache (the calls are no-ops)
        log.warning("TensorRT for RTX keeps no timing cache; --trt-timing-cache is not used")
        cache_path = None
    if cache_path:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    limits = ShapeLimits(max_batch=options.max_batch, max_context=spec.max_context)
    shapes = profiles(limits, kv_names(spec.num_layers)[0], spec.num_kv_heads, spec.head_dim)
    for ranges in shapes.values():
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            name = network.get_input(i).name
            profile.set_shape(name, *ranges[name])
        config.add_optimization_profile(profile)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LuodiError(f"TensorRT could not build the engine: {'; '.join(logger.errors[:5]) or 'no reason given'}")
    engine = Path(out_dir) / ENGINE_FILE
    write_bytes_atomic(engine, bytes(serialized))
    if cache_path:
        write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    kv_type = network.get_input([network.get_input(i).name for i in range(network.num_inputs)].index(
        kv_names(spec.num_layers)[0][0])).dtype
    return {"engine_file": ENGINE_FILE, "legality": checker, "engine_bytes": engine.stat().st_size,
            "module": trt.__name__,
            "version": trt.__version__, "arch": arch, "max_batch": limits.max_batch,
            "kv_dtype": {trt.DataType.HALF: "float16", trt.DataType.BF16: "bfloat16"}.get(kv_type, "float32"),
            "max_step_tokens": limits.max_step, "profiles": shapes,
            "build_seconds": round(time.perf_counter() - start, 1)}


def describe_engine(info: TensorRTInfo, max_context: int) -> str:
    """A trt export's engine as `luodi export` prints it: its size, build and profiles, and what running it needs."""
    if not info.engine_file:
        return (f"no TensorRT engine: TensorRT is not installed (the graph passed the {info.legality}); "
                "pip install 'luodi[tensorrt]' and export again")
    lines = [f"TensorRT engine {info.engine_file}: {info.engine_bytes / 1e6:.1f} MB, {info.module} {info.version}, "
             f"built for {info.arch} in {info.build_seconds} s"]
    for name, shapes in info.profiles.items():
        (lo_b, lo_s), _, (hi_b, hi_s) = shapes[INPUT_IDS]
        lines.append(f"  profile {name}: batch {lo_b}..{hi_b}, tokens per step {lo_s}..{hi_s}, past + new "
                     f"1..{shapes[ATTENTION_MASK][2][1]} (KV buffers of {max_context} positions)")
    if current_arch() is None and info.kv_dtype != "bfloat16":
        lines.append("  running the engine needs an NVIDIA GPU (none here); `luodi generate DIR --backend ort` runs "
                     "the same graph under ONNX Runtime CPU")
    return "\n".join(lines)
