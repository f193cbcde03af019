"""Export: model source -> canonical decoder -> traced ONNX -> the target's passes -> checked export folder.

export_model is one straight sequence; everything that differs between targets is a hook of the target's
module (luodi/targets/), read from its configs/targets/<name>.yaml.
"""

import logging
from pathlib import Path

from .. import __version__
from ..contract.graph import STEP_WINDOW, io_names
from ..contract.kv import STATEFUL
from ..contract.schema import to_json
from ..errors import LuodiError
from ..manifest import draft_manifest, write_manifest
from ..outputs import EXPORT_FOLDER, output_folder
from ..progress import Stages
from ..targets import get_target

log = logging.getLogger(__name__)
LOGITS_TOLERANCE = 1e-3  # fp32 max abs logit difference an export may have against transformers


def default_out(model: str, target: str) -> Path:
    """build/<model>-<target>, the folder `luodi export` writes when --out is not given."""
    return Path("build") / f"{Path(model).stem if '/' in model or model.endswith('.gguf') else model}-{target}"


def export_model(model: str, target: str = "ort", out: Path | None = None, max_context: int | None = None,
                 progress: bool = True, passes: str | None = None, precision: str | None = None,
                 engine=None, quantization: dict | None = None, force: bool = False) -> Path:
    """Export `model` (folder, .gguf or registry name) for `target` into `out`; returns the folder.

    `passes` edits the target's pass list (see luodi.passes.resolve_pipeline); `precision` (default the
    target's) picks fp32 or a weight compression the target config lists, and `quantization` overrides its
    settings (method, group_size, calibration token ids, ...); `engine` sets how a TensorRT
    target's engine is built. The folder appears only when everything succeeded, including the parity check
    against transformers (fp32 exports must match it). An existing `out` is replaced only when it is an
    earlier luodi export and `force` is set (luodi.outputs); anything else there is refused, untouched.
    """
    from ..loaders import resolve
    from ..loaders.hf_folder import generation_defaults, load_reference, save_tokenizer_files
    from ..memory_plan import memory_report
    from ..passes import run_passes
    from ..passes.base import op_histogram, weight_bytes
    from ..process_memory import release_freed_memory
    from ..targets.parity import check_parity, parity_reference
    from ..tokenizer import Tokenizer
    from .onnx_export import OPSET, embedding_table_entry, save_onnx, trace_to_onnx
    from .weights import canonical_from_hf, factor_low_rank

    target = get_target(target)
    settings = target.settings(precision, quantization, engine)
    pipeline = target.pipeline(settings, passes)
    steps = target.steps(settings)
    out = Path(out) if out else default_out(model, target.name)
    stages = Stages(["resolve model", "load weights", "trace to ONNX", "graph passes", "save",
                     *(steps[k] for k in ("quantize", "lower") if k in steps), "parity check",
                     *(steps[k] for k in ("build",) if k in steps), "manifest"], enabled=progress, summary=True)
    with stages, output_folder(out, EXPORT_FOLDER, force) as tmp:
        stages.next()
        source = resolve(model)
        stages.next()
        hf_model = load_reference(source.hf_dir)
        canonical = canonical_from_hf(hf_model, max_context, dtype=target.trace_dtype(settings))
        factor_low_rank(canonical, source.hf_dir)
        spec = canonical.spec
        prepared = target.prepare(canonical, settings)
        stages.next()
        graph = trace_to_onnx(canonical)
        stages.next()
        ops_before = op_histogram(graph)
        passed = run_passes(graph, pipeline)
        ops_after = op_histogram(graph)
        stages.next()
        # the reference's side of the parity check, recorded now so that the transformers model is not held
        # beside the save, quantize and lower steps, which hold copies of the weights of their own
        reference = None if target.parity_unavailable(settings) else parity_reference(hf_model, spec)
        del canonical, hf_model
        release_freed_memory()
        onnx_path = save_onnx(graph, tmp)
        embedding_table = embedding_table_entry(onnx_path)
        weights = weight_bytes(graph)
        del graph
        release_freed_memory()
        tokenizer_files = save_tokenizer_files(source.hf_dir, tmp)  # before quantizing: calibration reads it
        sections = {}
        if "quantize" in steps:
            stages.next()
            sections[target.section] = target.quantize(onnx_path, spec, settings, passed.kv_layout, prepared)
            weights = onnx_path.with_name(onnx_path.name + ".data").stat().st_size
            release_freed_memory()
        memory = memory_report(onnx_path, spec, weights, settings.kv_dtype)
        model_file, kv_cache = onnx_path.name, passed.kv_layout
        if "lower" in steps:
            stages.next()
            lowered = target.lower(onnx_path, tmp, spec, settings)
            model_file, kv_cache, memory["weight_bytes"] = lowered.model_file, STATEFUL.name, lowered.weight_bytes
            sections[target.section] = lowered.section
            release_freed_memory()
        inputs, outputs = io_names(spec.num_layers, embeds=embedding_table is not None)
        content = {
            "luodi_version": __version__,
            "source": {"name": source.name, "kind": source.kind, "origin": source.origin, "sha256": source.sha256},
            "target": target.name, "backend": target.backend, "precision": settings.precision, "opset": OPSET,
            "model_file": model_file, "max_context": spec.max_context, "spec": spec.to_json(),
            "io": {"inputs": inputs, "outputs": outputs, "kv_layout": "[batch, kv_heads, past_sequence, head_dim]"},
            "kv_cache": kv_cache, "kv_dtype": settings.kv_dtype, "memory": memory, "passes": passed.counts,
            "logits_window": STEP_WINDOW if passed.counts.get("last_token_logits") else None,
            "graph": {"nodes_before_passes": sum(ops_before.values()), "nodes": sum(ops_after.values()),
                      "ops_before_passes": ops_before, "ops": ops_after},
            "tokenizer_files": tokenizer_files,
            "generation": to_json(generation_defaults(source.hf_dir, Tokenizer(tmp).eos_token_id)),
            **({"embedding_table": embedding_table} if embedding_table else {}),
            **{name: section for name, section in sections.items() if section},
        }
        stages.next()
        content["parity"] = parity = check_parity(tmp, draft_manifest(content, str(out)), reference, target,
                                                   settings)
        if settings.precision == "fp32" and parity["max_abs_diff"] > LOGITS_TOLERANCE:
            raise LuodiError(f"export does not match transformers: max |logit diff| {parity['max_abs_diff']:.2e} "
                             f"> {LOGITS_TOLERANCE}")
        if "build" in steps:
            stages.next()
            content[target.section] = target.build(onnx_path, tmp, spec, settings)
        stages.next()
        write_manifest(tmp, content)
    return out
