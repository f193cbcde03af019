"""Graph passes over the exported ONNX model, one pass per file, run in the order a target config lists."""

from .cleanup import cleanup

PASSES = {"cleanup": cleanup}


def run_passes(model, names: list[str]) -> dict[str, int]:
    """Apply the named passes to an onnx_ir.Model in place; returns each pass's change count."""
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise ValueError(f"unknown pass(es) {unknown}; available: {', '.join(PASSES)}")
    return {name: PASSES[name](model) for name in names}
