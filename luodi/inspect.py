"""`luodi inspect`: what an exported graph is made of — op histogram and node count (before and after the
passes when the export's manifest records them), each pass's match count, the fused ops, weight bytes,
KV-cache bytes at max context and the planned activation peak (luodi.memory_plan)."""

from pathlib import Path

from .contract import Manifest
from .contract.schema import to_json
from .errors import CorruptModelError, LuodiError
from .manifest import MANIFEST, read_manifest
from .memory_plan import memory_report, plan_activations

FUSED_OPS = {"SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "SkipLayerNormalization",
             "FastGelu", "RotaryEmbedding", "Attention", "GroupQueryAttention", "MultiHeadAttention",
             "RMSNormalization", "TensorScatter"}
POOL_EXAMPLE = (8, 512)  # sequences, positions each: the KV pool line's example


def _load(path: Path):
    import onnx_ir as ir

    try:
        return ir.load(str(path))  # external weights are referenced, not read
    except Exception as e:
        raise CorruptModelError(f"{path}: not a readable ONNX model ({e})") from None


def inspect_model(target: Path, shape: tuple[int, int, int] | None = None) -> dict:
    """The inspection report of an export folder or a .onnx file, as a dict; `shape` = (batch, sequence, past)
    adds the activation plan of that step."""
    target = Path(target)
    manifest = read_manifest(target) if (target / MANIFEST).is_file() else None
    onnx_path = target / (manifest.model_file if manifest else "model.onnx") if target.is_dir() else target
    if not onnx_path.is_file():
        raise CorruptModelError(f"{target}: no ONNX model found")
    if onnx_path.suffix == ".xml" and manifest:
        return _lowered_report(onnx_path, manifest, shape)
    from .passes.base import op_histogram, weight_bytes

    model = _load(onnx_path)
    ops = op_histogram(model)
    weights = weight_bytes(model)
    report = {"model": str(onnx_path), "nodes": sum(ops.values()), "ops": ops,
              "fused_ops": {k: v for k, v in ops.items() if k.split(".")[-1] in FUSED_OPS or "." in k},
              "weight_bytes": weights,
              "opset": {domain or "ai.onnx": version for domain, version in model.opset_imports.items()}}
    if manifest:
        memory = _recorded(manifest) or memory_report(onnx_path, manifest.spec, weights)
        report |= {"passes": manifest.passes or {}, "max_context": manifest.max_context,
                   "nodes_before_passes": (manifest.graph or {}).get("nodes_before_passes"),
                   "kv_cache": manifest.kv_cache, **memory}
    if shape:
        if shape[0] < 1 or shape[1] < 1 or shape[2] < 0:
            raise LuodiError(f"--step {' '.join(map(str, shape))}: batch and new tokens must be >= 1, past >= 0")
        try:
            report["activation_plan"] = plan_activations(onnx_path, *shape)
        except ValueError as e:
            raise CorruptModelError(f"{onnx_path}: no activation plan: {e}") from None
    return report


def _lowered_report(ir_path: Path, manifest: Manifest, shape) -> dict:
    """The report of an export lowered to an OpenVINO IR, from its manifest: the ONNX graph it was lowered
    from (ops after the passes) and what OpenVINO's CPU plugin compiled it into."""
    if shape:
        raise LuodiError(f"{ir_path}: --step plans an ONNX graph; this export keeps only its OpenVINO IR "
                         "(its manifest holds the plans made at export time)")
    graph = manifest.graph or {}
    ops = graph.get("ops", {})
    return {"model": str(ir_path), "nodes": graph.get("nodes"), "ops": ops,
            "fused_ops": {k: v for k, v in ops.items() if k.split(".")[-1] in FUSED_OPS or "." in k},
            "runtime_ops": (manifest.openvino or {}).get("runtime_ops", {}),
            "passes": manifest.passes or {}, "nodes_before_passes": graph.get("nodes_before_passes"),
            "max_context": manifest.max_context, "kv_cache": manifest.kv_cache, **_recorded(manifest)}


def _recorded(manifest: Manifest) -> dict:
    """The memory block the manifest records (the fields it has), or {}."""
    return {k: v for k, v in to_json(manifest.memory).items() if v is not None} if manifest.memory else {}


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
    if report.get("runtime_ops"):
        lines.append("OpenVINO runtime ops: " + ", ".join(f"{k} {v}" for k, v in report["runtime_ops"].items()))
    folded = report.get("folded_weight_bytes")
    lines.append(f"weights: {report['weight_bytes'] / 1e6:.1f} MB" + (
        f" (+{folded / 1e6:.1f} MB that ONNX Runtime computes from them at load)" if folded else ""))
    if "kv_bytes_at_max_context" in report:
        lines.append(f"KV cache ({report['kv_cache']}): {report['kv_bytes_per_token'] / 1e3:.1f} kB per position, "
                     f"{report['kv_bytes_at_max_context'] / 1e6:.1f} MB at max context ({report['max_context']} "
                     "positions, batch 1)")
        lines.append(f"KV pool (many sequences, docs/BATCHING.md): held by the sequences' real lengths, e.g. "
                     f"{POOL_EXAMPLE[0]} sequences of {POOL_EXAMPLE[1]} positions hold "
                     f"{POOL_EXAMPLE[0] * POOL_EXAMPLE[1] * report['kv_bytes_per_token'] / 1e6:.1f} MB; size it with "
                     "scheduler(max_rows, kv_positions) or bench --kv-pool-positions")
        plans = report["activations"]
        if "unavailable" in plans:
            lines.append(f"activation plan: unavailable ({plans['unavailable']})")
        for name, plan in plans.items():
            if name != "unavailable":
                lines.append(_plan_line(name.replace("_", " "), plan))
    if "activation_plan" in report:
        lines.append(_plan_line("requested step", report["activation_plan"]))
    return "\n".join(lines)


def _plan_line(name: str, plan: dict) -> str:
    return (f"activations, {name} (batch {plan['batch']}, {plan['sequence']} new, {plan['past']} past): "
            f"planned peak {plan['planned_peak_bytes'] / 1e6:.1f} MB vs {plan['naive_bytes'] / 1e6:.1f} MB "
            f"without reuse")
