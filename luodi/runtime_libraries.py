"""The runtime libraries as both sides of luodi use them: the exporter (lowering to an OpenVINO IR, building a
TensorRT engine) and the runtimes (running them). Each is imported lazily with a clear error naming the extra that
installs it; OpenVINO's CPU-plugin properties and the GPU's compute capability are decided here once, so no
compile-side module imports a runtime module (luodi/runtimes/) for them.
"""

import importlib

from .errors import LuodiError

PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")


def import_openvino():
    """The openvino module, or a clear error naming the extra that installs it."""
    try:
        import openvino
    except ImportError:
        raise LuodiError("OpenVINO is not installed: pip install 'luodi[runtime-openvino]'") from None
    return openvino


def compile_options(threads: int | None, hint: str, precision: str = "f32", kv_f32: bool = True,
                    exact: bool = False) -> dict:
    """The CPU plugin's properties: performance hint, threads, the precision activations are computed in, and
    (`kv_f32`, fp32 exports) an f32 KV cache instead of the plugin's u8 default.

    f32 is asked for explicitly because on CPUs with bf16 (AMX, AVX512-BF16) the plugin otherwise computes every
    IR in bf16. In f32 it also quantizes the activations of int8/int4-weight MatMuls to int8 on the fly (its
    dynamic quantization, groups of 32): on SmolLM2 with AMX, int8 decode steps took 8.6 ms against 14.8 in bf16
    (int4: 6.2 against 7.6), at a perplexity of +0.83% over fp32 against +0.62% (GPL-3 text); a 512-token
    prefill takes 3x as long as in bf16. bf16 and f16, where the CPU has them, trade fidelity for speed on
    fp32 and fp16 IRs and give the faster long prefill (check_precision vets the value first).

    `exact` (the export's parity check) asks for the plugin's ACCURACY mode and sets an f32 KV cache and no dynamic
    quantization explicitly (a model's rt_info may otherwise turn them back on): nothing the plugin picks by CPU,
    version or heuristic may trade accuracy for speed. An fp32 export computes the same bits either way here (AVX-512
    BF16 Zen 4, OpenVINO 2026.4); an int8/int4 one computes its activations in f32 rather than int8."""
    if hint not in PERFORMANCE_HINTS:
        raise LuodiError(f"unknown performance hint {hint!r}; choose one of {', '.join(PERFORMANCE_HINTS)}")
    options = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision}
    if threads:
        options["INFERENCE_NUM_THREADS"] = int(threads)
    if kv_f32 or exact:
        options["KV_CACHE_PRECISION"] = "f32"
    if exact:
        options |= {"EXECUTION_MODE_HINT": "ACCURACY", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    return options


def import_tensorrt(required: bool = True):
    """The TensorRT Python module (`tensorrt`, else `tensorrt_rtx`); None or a clear error when neither is."""
    for name in TENSORRT_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    if required:
        raise LuodiError("TensorRT is not installed: pip install 'luodi[tensorrt]' (TensorRT for RTX, "
                         "tensorrt-rtx-cu12) or NVIDIA's tensorrt wheels")
    return None


def current_arch() -> str | None:
    """'smXY' of the first CUDA GPU, or None when there is none (or no CUDA-enabled torch to ask)."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"sm{major}{minor}"
    except Exception:  # a CPU-only torch or a broken driver: no GPU to build for
        return None
    return None
