"""`luodi inspect`: what an exported graph is made of — op histogram and node count (before and after the
passes when the export's manifest records them), each pass's match count, the fused ops, weight bytes and
KV-cache bytes at max context."""

import json
from pathlib import Path

from .errors import CorruptModelError
from .manifest import MANIFEST

FUSED_OPS = {"SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "SkipLayerNormalization",
             "FastGelu", "RotaryEmbedding", "Attention", "GroupQueryAttention", "MultiHeadAttention"}


def _load(path: Path):
    import onnx_ir as ir

    try:
        return ir.load(str(path))  # external weights are referenced, not read
    except Exception as e:
        raise CorruptModelError(f"{path}: not a readable ONNX model ({e})") from None


def inspect_model(target: Path) -> dict:
    """The inspection report of an export folder or a .onnx file, as a dict."""
    target = Path(target)
    manifest = json.loads((target / MANIFEST).read_text()) if (target / MANIFEST).is_file() else None
    onnx_path = target / (manifest["model_file"] if manifest else "model.onnx") if target.is_dir() else target
    if not onnx_path.is_file():
        raise CorruptModelError(f"{target}: no ONNX model found")
    from .passes.base import op_histogram

    model = _load(onnx_path)
    ops = op_histogram(model)
    weight_bytes = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    report = {"model": str(onnx_path), "nodes": sum(ops.values()), "ops": ops,
              "fused_ops": {k: v for k, v in ops.items() if k.split(".")[-1] in FUSED_OPS or "." in k},
              "weight_bytes": weight_bytes,
              "opset": {domain or "ai.onnx": version for domain, version in model.opset_imports.items()}}
    if manifest:
        spec = manifest["spec"]
        report |= {"passes": manifest.get("passes", {}),
                   "nodes_before_passes": manifest.get("graph", {}).get("nodes_before_passes"),
                   "max_context": manifest["max_context"],
                   "kv_bytes_at_max_context": 2 * spec["num_layers"] * spec["num_kv_heads"] * spec["head_dim"]
                   * manifest["max_context"] * 4}
    return report


def format_report(report: dict) -> str:
    """The report as readable text."""
    lines = [f"{report['model']}"]
    before = report.get("nodes_before_passes")
    lines.append(f"nodes: {report['nodes']}" + (f" (traced: {before}, {report['nodes'] / before:.0%} remain)"
                                                 if before else ""))
    if report.get("passes"):
        lines.append("passes: " + ", ".join(f"{k} {v}" for k, v in report["passes"].items()))
    lines.append("fused ops: " + (", ".join(f"{k} {v}" for k, v in report["fused_ops"].items()) or "none"))
    lines.append("ops: " + ", ".join(f"{k} {v}" for k, v in report["ops"].items()))
    lines.append(f"weights: {report['weight_bytes'] / 1e6:.1f} MB")
    if "kv_bytes_at_max_context" in report:
        lines.append(f"KV cache at max context ({report['max_context']} positions, batch 1): "
                     f"{report['kv_bytes_at_max_context'] / 1e6:.1f} MB")
    return "\n".join(lines)
