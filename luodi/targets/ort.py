"""The `ort` target: ONNX Runtime (CPU), fusion passes and an in-place KV cache; int4/int8 weights as
MatMulNBits (luodi/quantization/ort_weights.py), AWQ scales folded in before tracing."""

from dataclasses import replace
from pathlib import Path

from ..contract.manifest import ModelSpec
from .base import Settings, Target

QUANTIZATION_FIELDS = ("bits", "method", "group_size", "accuracy_level", "calibration", "keep", "size_budget_mb")


class OrtTarget(Target):
    """ONNX Runtime: the ONNX graph is the model; compressed precisions quantize its MatMul weights."""

    triton_platform = "onnxruntime_onnx"
    section = "quantization"

    def settings(self, precision, quantization, engine) -> Settings:
        """fp32, or a MatMulNBits WeightQuantization from the YAML's entry and the user's overrides."""
        from ..quantization.ort_weights import WeightQuantization

        settings = self.base_settings(precision)
        if settings.compression is None:
            self.refuse_quantization(settings, quantization)
            return settings
        merged = {**settings.compression, **(quantization or {})}
        weights = WeightQuantization(**{k: merged[k] for k in QUANTIZATION_FIELDS if k in merged})
        return replace(settings, compression=merged, extra={"weights": weights})

    def steps(self, settings: Settings) -> dict[str, str]:
        weights = settings.extra.get("weights")
        return {"quantize": f"quantize weights ({weights.method})"} if weights else {}

    def prepare(self, canonical, settings: Settings) -> dict | None:
        """AWQ: per-channel scales folded into the decoder's weights before tracing."""
        weights = settings.extra.get("weights")
        if weights is None or weights.method != "awq":
            return None
        from ..quantization.awq import apply_awq

        return apply_awq(canonical, weights.calibration, weights.bits, weights.group_size)

    def quantize(self, onnx_path: Path, spec: ModelSpec, settings: Settings, kv_cache: str, prepared) -> dict | None:
        """MatMul weights -> MatMulNBits, calibrated on prefills of the calibration text where the method needs it."""
        weights = settings.extra.get("weights")
        if weights is None:
            return None
        from ..quantization.calibration import calibration_feeds
        from ..quantization.ort_weights import quantize_weights

        feeds = calibration_feeds(spec, kv_cache, weights.calibration)
        return quantize_weights(onnx_path, weights, feeds) | ({"awq": prepared} if prepared else {})


TARGET = OrtTarget
