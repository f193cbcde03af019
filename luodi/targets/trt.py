"""The `trt` target: a standard-op graph TensorRT's parser takes whole (RMSNormalization, RotaryEmbedding, the
KV cache scattered into a fixed max-context buffer), traced in fp16/bf16 where asked, int4/int8 weights as
blocked DequantizeLinear, and an engine built ahead of time; on a CPU-only machine its graph is checked under
ONNX Runtime."""

from dataclasses import replace
from pathlib import Path

from ..contract.manifest import ModelSpec
from .base import Settings, Target


class TrtTarget(Target):
    """TensorRT: the graph is traced in the precision's dtype; the engine is built after the parity check."""

    parity_backend = "ort"  # the engine needs a GPU; its ONNX graph runs under ONNX Runtime CPU
    triton_platform = "tensorrt_plan"
    section = "tensorrt"

    def settings(self, precision, quantization, engine) -> Settings:
        """The traced dtype (the KV cache's too) and the engine's build options."""
        from ..exporters.tensorrt_engine import EngineOptions

        settings = super().settings(precision, quantization, engine)
        dtype = (settings.compression or {}).get("dtype", "float32")
        return replace(settings, kv_dtype=dtype, extra={"engine": engine or EngineOptions(), "dtype": dtype})

    def trace_dtype(self, settings: Settings) -> str | None:
        return None if settings.extra["dtype"] == "float32" else settings.extra["dtype"]

    def steps(self, settings: Settings) -> dict[str, str]:
        return {"build": "build TensorRT engine"}

    def build(self, onnx_path: Path, folder: Path, spec: ModelSpec, settings: Settings) -> dict:
        """The engine (model.engine) with the decode and prefill profiles; the manifest's tensorrt section."""
        from ..exporters.tensorrt_engine import build_engine

        return build_engine(onnx_path, folder, spec, settings.extra["engine"])

    def parity_unavailable(self, settings: Settings) -> str | None:
        if settings.extra["dtype"] == "bfloat16":
            return "bf16 graphs run on the GPU only; ONNX Runtime CPU has no bf16 kernels to check them"
        return None


TARGET = TrtTarget
