"""Export: model source -> canonical decoder -> traced ONNX -> target passes -> checked export folder."""

import json
import logging
from pathlib import Path

import yaml

from .. import __version__
from ..errors import LuodiError
from ..manifest import write_manifest
from ..outputs import EXPORT_FOLDER, claim_output, output_folder
from ..paths import configs_dir
from ..progress import Stages
from ..runtimes.shapes import MAX_STEP_TOKENS
from .tensorrt_engine import EngineOptions

log = logging.getLogger(__name__)
LOGITS_TOLERANCE = 1e-3  # fp32 max abs logit difference an export may have against transformers


def target_config(target: str) -> dict:
    """configs/targets/<target>.yaml, or a clear error naming the available targets."""
    path = configs_dir() / "targets" / f"{target}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (configs_dir() / "targets").glob("*.yaml"))
        raise LuodiError(f"unknown or not yet available target {target!r}; available: {', '.join(known)}")
    return yaml.safe_load(path.read_text())


def default_out(model: str, target: str) -> Path:
    """build/<model>-<target>, the folder `luodi export` writes when --out is not given."""
    return Path("build") / f"{Path(model).stem if '/' in model or model.endswith('.gguf') else model}-{target}"


def _generation_defaults(hf_dir: Path, tokenizer_eos: int | None) -> dict:
    gen_path = hf_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    eos = gen.get("eos_token_id", tokenizer_eos)
    eos_ids = sorted({e for e in (eos if isinstance(eos, list) else [eos]) if e is not None})
    pad = gen.get("pad_token_id")
    return {"eos_token_ids": eos_ids, "pad_token_id": pad if pad is not None else (eos_ids or [0])[0],
            "bos_token_id": gen.get("bos_token_id")}


def _kv_cache_layout(pass_counts: dict, layers: int) -> str:
    """How the graph holds its KV cache: 'shared_buffer' (inplace_kv_cache: GroupQueryAttention writes in
    place), 'scatter_buffer' (kv_cache_scatter: TensorScatter into a fixed max-context buffer) or 'concat'.
    Every layer or none: a partly rewritten model has no layout a runtime could drive."""
    rewritten = {name: pass_counts.get(name, 0) for name in ("inplace_kv_cache", "kv_cache_scatter")}
    for name, count in rewritten.items():
        if count not in (0, layers):
            raise LuodiError(f"{name} rewrote {count} of {layers} layers; a model needs all or none")
    if rewritten["inplace_kv_cache"]:
        return "shared_buffer"
    return "scatter_buffer" if rewritten["kv_cache_scatter"] else "concat"


def _compression(config: dict, precision: str) -> dict | None:
    """The target's weight compression for `precision` (None for fp32), or a clear error."""
    if precision == "fp32":
        return None
    available = config.get("compression", {})
    if precision not in available:
        raise LuodiError(f"precision {precision!r} is not available for target {config['name']}; "
                         f"available: {', '.join(['fp32', *available])}")
    return available[precision]


OPENVINO_SETTINGS = {"method": ("rtn", "awq", "gptq"), "group_size": None, "calibration": None}


def _check_quantization_settings(config: dict, precision: str, compression: dict | None, settings: dict) -> None:
    """Quantization overrides apply to compressed precisions of ort (MatMulNBits) and openvino (NNCF) only;
    openvino takes a method (rtn, or NNCF's data-aware awq / gptq), a group size and calibration text."""
    if compression is None or config["backend"] not in ("ort", "openvino") or "mode" in compression and (
            compression["mode"] == "FP16"):
        raise LuodiError("quantization settings (method, group size, calibration) apply to the int4/int8 "
                         f"precisions of the ort and openvino targets, not to {config['name']} {precision}")
    if config["backend"] != "openvino":
        return
    unsupported = sorted(k for k in settings if k not in OPENVINO_SETTINGS)
    if unsupported:
        raise LuodiError(f"the openvino target does not take {', '.join(unsupported)}; it takes --method "
                         "rtn|awq|gptq, --group-size and --calib")
    if settings.get("method", "rtn") not in OPENVINO_SETTINGS["method"]:
        raise LuodiError(f"method {settings['method']!r} is not available for openvino (NNCF); available: "
                         f"{', '.join(OPENVINO_SETTINGS['method'])}")


def _ort_quantization(compression: dict | None, config: dict):
    """The ONNX Runtime target's weight quantization settings, or None (fp32, or another target)."""
    if not compression or config["backend"] != "ort":
        return None
    from ..quantization.ort_weights import WeightQuantization

    fields = ("bits", "method", "group_size", "accuracy_level", "calibration", "keep", "size_budget_mb")
    return WeightQuantization(**{k: compression[k] for k in fields if k in compression})


def _lower_openvino(onnx_path: Path, folder: Path, num_layers: int, compression: dict | None) -> tuple[str, dict]:
    """The ONNX graph -> a stateful OpenVINO IR in `folder` (the ONNX files removed); returns the IR's file
    name and what OpenVINO's CPU plugin made of it (runtime op counts: the fused kernels it uses)."""
    from ..runtimes.openvino import compile_options, import_openvino
    from .openvino_ir import compression_record, lower_to_openvino, runtime_op_counts

    xml = lower_to_openvino(onnx_path, folder, num_layers, compression)
    for path in (onnx_path, onnx_path.with_name(onnx_path.name + ".data")):
        path.unlink()
    options = compile_options(2, "LATENCY", kv_f32=not compression)
    compiled = import_openvino().Core().compile_model(str(xml), "CPU", options)
    weights = xml.with_suffix(".bin").stat().st_size
    return xml.name, {"runtime_ops": runtime_op_counts(compiled), "weights_bytes": weights,
                      **({"compression": compression_record(compression)} if compression else {})}


def export_model(model: str, target: str = "ort", out: Path | None = None, max_context: int | None = None,
                 progress: bool = True, passes: str | None = None, precision: str | None = None,
                 engine: EngineOptions | None = None, quantization: dict | None = None, force: bool = False) -> Path:
    """Export `model` (folder, .gguf or registry name) for `target` into `out`; returns the folder.

    `passes` edits the target's pass list (see luodi.passes.resolve_pipeline); `precision` (default the
    target's) picks fp32 or a weight compression the target config lists, and `quantization` overrides its
    settings (method, group_size, calibration token ids, ...); `engine` sets how a TensorRT
    target's engine is built. The folder appears only when everything succeeded, including the parity check
    against transformers (fp32 exports must match it). An existing `out` is replaced only when it is an
    earlier luodi export and `force` is set (luodi.outputs); anything else there is refused, untouched.
    """
    from ..loaders import resolve
    from ..loaders.hf_folder import load_reference, save_tokenizer_files
    from ..memory_plan import memory_report
    from ..passes import resolve_pipeline, run_passes
    from ..passes.base import op_histogram, weight_bytes
    from .onnx_export import OPSET, embedding_table_entry, io_names, save_onnx, trace_to_onnx
    from .parity import check_parity
    from .weights import canonical_from_hf

    config = target_config(target)
    precision = precision or config.get("precision", "fp32")
    compression = _compression(config, precision)
    if quantization:
        _check_quantization_settings(config, precision, compression, quantization)
        compression = {**compression, **quantization}
    pipeline = resolve_pipeline(resolve_pipeline(config.get("passes", []), (compression or {}).get("passes")), passes)
    weight_quantization = _ort_quantization(compression, config)
    out = Path(out) if out else default_out(model, target)
    claim_output(out, EXPORT_FOLDER, force)  # before minutes of work; output_folder checks again at the end
    lowering = ["lower to OpenVINO"] if config["backend"] == "openvino" else []
    building = ["build TensorRT engine"] if config["backend"] == "tensorrt" else []
    quantizing = [f"quantize weights ({weight_quantization.method})"] if weight_quantization else []
    stages = Stages(["resolve model", "load weights", "trace to ONNX", "graph passes", "save", *quantizing, *lowering,
                     "parity check", *building, "manifest"], enabled=progress)
    with stages, output_folder(out, EXPORT_FOLDER, force) as tmp:
        stages.next()
        source = resolve(model)
        stages.next()
        hf_model = load_reference(source.hf_dir)
        canonical = canonical_from_hf(hf_model, max_context)
        if compression and "dtype" in compression:  # a graph in reduced precision (the trt target's fp16)
            import torch

            canonical = canonical.to(getattr(torch, compression["dtype"]))
        spec = canonical.spec
        awq = None
        if weight_quantization and weight_quantization.method == "awq":
            from ..quantization.awq import apply_awq

            awq = apply_awq(canonical, weight_quantization.calibration, weight_quantization.bits,
                            weight_quantization.group_size)
        stages.next()
        graph = trace_to_onnx(canonical)
        stages.next()
        ops_before = op_histogram(graph)
        pass_counts = run_passes(graph, pipeline)
        kv_cache = _kv_cache_layout(pass_counts, spec.num_layers)
        ops_after = op_histogram(graph)
        stages.next()
        onnx_path = save_onnx(graph, tmp)
        embedding_table = embedding_table_entry(onnx_path)
        weights = weight_bytes(graph)
        quantized = None
        if weight_quantization:
            stages.next()
            from ..quantization.calibration import calibration_feeds
            from ..quantization.ort_weights import quantize_weights

            feeds = calibration_feeds(spec.to_dict(), kv_cache, weight_quantization.calibration)
            quantized = quantize_weights(onnx_path, weight_quantization, feeds) | ({"awq": awq} if awq else {})
            weights = onnx_path.with_name(onnx_path.name + ".data").stat().st_size
        memory = memory_report(onnx_path, spec.to_dict(), weights)
        del graph, canonical
        model_file, lowered = onnx_path.name, {}
        if lowering:
            stages.next()
            model_file, lowered = _lower_openvino(onnx_path, tmp, spec.num_layers, compression)
            memory["weight_bytes"] = lowered.pop("weights_bytes")
        tokenizer_files = save_tokenizer_files(source.hf_dir, tmp)
        stages.next()
        from ..tokenizer import Tokenizer

        inputs, outputs = io_names(spec.num_layers, embeds=embedding_table is not None)
        manifest = {
            "luodi_version": __version__,
            "source": {"name": source.name, "kind": source.kind, "origin": source.origin, "sha256": source.sha256},
            "target": target, "backend": config["backend"], "precision": precision, "opset": OPSET,
            "model_file": model_file, "max_context": spec.max_context, "spec": spec.to_dict(),
            "io": {"inputs": inputs, "outputs": outputs, "kv_layout": "[batch, kv_heads, past_sequence, head_dim]"},
            "kv_cache": "stateful" if lowering else kv_cache, "memory": memory,
            "passes": pass_counts, "logits_window": MAX_STEP_TOKENS if pass_counts.get("last_token_logits") else None,
            "graph": {"nodes_before_passes": sum(ops_before.values()), "nodes": sum(ops_after.values()),
                      "ops_before_passes": ops_before, "ops": ops_after},
            "tokenizer_files": tokenizer_files,
            "generation": _generation_defaults(source.hf_dir, Tokenizer(tmp).eos_token_id),
            **({"embedding_table": embedding_table} if embedding_table else {}),
            **({"openvino": lowered} if lowering else {}),
            **({"quantization": quantized} if quantized else {}),
        }
        if (compression or {}).get("dtype") == "bfloat16":  # no bf16 kernels (or numpy dtype) on the CPU path
            manifest["parity"] = parity = {"max_abs_diff": None, "greedy_match": None,
                                           "unavailable": "bf16 graphs run on the GPU only; ONNX Runtime CPU "
                                                          "has no bf16 kernels to check them"}
        else:
            manifest["parity"] = parity = check_parity(tmp, manifest, hf_model)
        if precision == "fp32" and parity["max_abs_diff"] > LOGITS_TOLERANCE:
            raise LuodiError(f"export does not match transformers: max |logit diff| {parity['max_abs_diff']:.2e} "
                             f"> {LOGITS_TOLERANCE}")
        if building:
            stages.next()
            from .tensorrt_engine import build_engine

            manifest["tensorrt"] = build_engine(onnx_path, tmp, spec.to_dict(), engine or EngineOptions())
        stages.next()
        write_manifest(tmp, manifest)
    return out
