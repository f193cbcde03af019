"""Export: model source -> canonical decoder -> traced ONNX -> target passes -> checked export folder."""

import json
import logging
from pathlib import Path

import yaml

from .. import __version__
from ..errors import LuodiError
from ..fileio import atomic_folder
from ..manifest import MANIFEST, write_manifest
from ..paths import configs_dir
from ..progress import Stages

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


def _check_out(out: Path) -> None:
    """Refuse to replace a non-empty folder that is not a luodi export (it may hold the user's files)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise LuodiError(f"{out} exists and is not a luodi export folder; choose another --out")


def _generation_defaults(hf_dir: Path, tokenizer_eos: int | None) -> dict:
    gen_path = hf_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    eos = gen.get("eos_token_id", tokenizer_eos)
    eos_ids = sorted({e for e in (eos if isinstance(eos, list) else [eos]) if e is not None})
    pad = gen.get("pad_token_id")
    return {"eos_token_ids": eos_ids, "pad_token_id": pad if pad is not None else (eos_ids or [0])[0],
            "bos_token_id": gen.get("bos_token_id")}


def _kv_cache_layout(inplace_layers: int, layers: int) -> str:
    """'shared_buffer' when every layer's attention writes its KV cache in place, 'concat' when none does."""
    if inplace_layers not in (0, layers):
        raise LuodiError(f"inplace_kv_cache rewrote {inplace_layers} of {layers} layers; a model needs all or none")
    return "shared_buffer" if inplace_layers else "concat"


def export_model(model: str, target: str = "ort", out: Path | None = None, max_context: int | None = None,
                 progress: bool = True, passes: str | None = None) -> Path:
    """Export `model` (folder, .gguf or registry name) for `target` into `out`; returns the folder.

    `passes` edits the target's pass list (see luodi.passes.resolve_pipeline). The folder appears only
    when everything succeeded, including the parity check against transformers.
    """
    from ..loaders import resolve
    from ..loaders.hf_folder import load_reference, save_tokenizer_files
    from ..memory_plan import memory_report
    from ..passes import resolve_pipeline, run_passes
    from ..passes.base import op_histogram, weight_bytes
    from .onnx_export import OPSET, io_names, save_onnx, trace_to_onnx
    from .parity import check_parity
    from .weights import canonical_from_hf

    config = target_config(target)
    pipeline = resolve_pipeline(config.get("passes", []), passes)
    out = Path(out) if out else default_out(model, target)
    _check_out(out)
    stages = Stages(["resolve model", "load weights", "trace to ONNX", "graph passes", "save", "parity check",
                     "manifest"], enabled=progress)
    with stages, atomic_folder(out) as tmp:
        stages.next()
        source = resolve(model)
        stages.next()
        hf_model = load_reference(source.hf_dir)
        canonical = canonical_from_hf(hf_model, max_context)
        spec = canonical.spec
        stages.next()
        graph = trace_to_onnx(canonical)
        stages.next()
        ops_before = op_histogram(graph)
        pass_counts = run_passes(graph, pipeline)
        kv_cache = _kv_cache_layout(pass_counts.get("inplace_kv_cache", 0), spec.num_layers)
        ops_after = op_histogram(graph)
        stages.next()
        onnx_path = save_onnx(graph, tmp)
        weights = weight_bytes(graph)
        del graph, canonical
        tokenizer_files = save_tokenizer_files(source.hf_dir, tmp)
        stages.next()
        from ..tokenizer import Tokenizer

        generation = _generation_defaults(source.hf_dir, Tokenizer(tmp).eos_token_id)
        parity = check_parity(tmp, spec.to_dict(), hf_model, kv_cache)
        if parity["max_abs_diff"] > LOGITS_TOLERANCE:
            raise LuodiError(f"export does not match transformers: max |logit diff| {parity['max_abs_diff']:.2e} "
                             f"> {LOGITS_TOLERANCE}")
        stages.next()
        memory = memory_report(onnx_path, spec.to_dict(), weights)
        inputs, outputs = io_names(spec.num_layers)
        write_manifest(tmp, {
            "luodi_version": __version__,
            "source": {"name": source.name, "kind": source.kind, "origin": source.origin, "sha256": source.sha256},
            "target": target, "backend": config["backend"], "precision": config.get("precision", "fp32"),
            "opset": OPSET, "model_file": "model.onnx", "max_context": spec.max_context, "spec": spec.to_dict(),
            "io": {"inputs": inputs, "outputs": outputs, "kv_layout": "[batch, kv_heads, past_sequence, head_dim]"},
            "kv_cache": kv_cache, "memory": memory,
            "passes": pass_counts, "logits": "last" if pass_counts.get("last_token_logits") else "all",
            "graph": {"nodes_before_passes": sum(ops_before.values()), "nodes": sum(ops_after.values()),
                      "ops_before_passes": ops_before, "ops": ops_after},
            "tokenizer_files": tokenizer_files, "generation": generation, "parity": parity,
        })
    return out
