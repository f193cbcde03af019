"""The `ort` target: ONNX Runtime (CPU), fusion passes and an in-place KV cache; int4/int8 weights as
MatMulNBits (luodi/quantization/ort_weights.py), AWQ scales folded in before tracing."""

from dataclasses import replace
from pathlib import Path

from ..contract.manifest import ModelSpec
from .base import Settings, Target

QUANTIZATION_FIELDS = ("bits", "method", "group_size", "accuracy_level", "calibration", "keep", "size_budget_mb",
                       "max_quality_loss")


class OrtTarget(Target):
    """ONNX Runtime: the ONNX graph is the model; compressed precisions quantize its MatMul weights."""

    triton_platform = "onnxruntime_onnx"
    section = "quantization"

    def settings(self, precision, quantization, engine) -> Settings:
        """fp32, or a MatMulNBits WeightQuantization from the YAML's entry and the user's overrides."""
        from ..quantization.ort_weights import SEARCH, WeightQuantization

        settings = self.base_settings(precision)
        if settings.compression is None:
            self.refuse_quantization(settings, quantization)
            return settings
        merged = {**settings.compression, **(quantization or {})}
        if merged.get("method") == SEARCH and (merged.get("keep") or merged.get("size_budget_mb") is not None):
            merged["method"] = "rtn"  # int8 MatMuls chosen for a given recipe: RTN, int4's default before the search
        elif merged.get("method") == SEARCH and "group_size" not in (quantization or {}):
            merged["group_size"] = 0  # the recipe search picks it
        weights = WeightQuantization(**{k: merged[k] for k in QUANTIZATION_FIELDS if k in merged})
        weights.check(set())  # before tracing; the group's divisibility is checked on the graph
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
        from ..quantization.ort_weights import SEARCH, quantize_weights

        if weights.method != SEARCH:
            feeds = calibration_feeds(spec, kv_cache, weights.calibration)
            return quantize_weights(onnx_path, weights, feeds) | ({"awq": prepared} if prepared else {})
        from ..contract.quantization import RECIPE_SEARCH
        from ..quantization.recipe_search import search_recipe

        if not weights.calibration:  # the default calibration text, tokenized by the export's own tokenizer
            weights = replace(weights, calibration=default_calibration_ids(onnx_path.parent))
        feeds = calibration_feeds(spec, kv_cache, weights.calibration)
        chosen, search = search_recipe(onnx_path, weights, feeds)
        return quantize_weights(onnx_path, chosen, feeds) | {RECIPE_SEARCH: search}


def default_calibration_ids(folder: Path, characters: int = 40_000) -> tuple:
    """Token ids of the start of luodi's calibration text (compress/texts.py: Python's help() topics, never
    the held-out licence texts), with the tokenizer saved in `folder`, in calibration windows."""
    from ..compress.texts import training_text
    from ..quantization.calibration import calibration_ids
    from ..tokenizer import Tokenizer

    return calibration_ids(Tokenizer(folder), training_text()[:characters])


TARGET = OrtTarget
