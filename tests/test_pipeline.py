"""The ort and trt pass pipelines on whole models: each fusion matches the expected number of times (a silent
non-match fails), pipeline edits, and `luodi inspect`."""

import json
import subprocess
import sys

import pytest

from luodi.errors import LuodiError
from luodi.manifest import read_manifest
from luodi.passes import resolve_pipeline


def _expected(spec) -> dict:
    layers, family = spec.num_layers, spec.family
    full_rotary = spec.rotary_dim == spec.head_dim
    tied = int(spec.tie_word_embeddings)
    common = {"embedding_gather": tied, "fuse_attention": layers, "last_token_logits": 1, "embedding_rows": tied,
              "lm_head_view": tied, "embedding_input": 1}
    if family == "gpt2":
        return {**common, "fuse_rms_norm": 0, "fuse_skip_norm": 2 * layers + 1, "fuse_gelu": layers, "fuse_silu": 0,
                "fuse_rotary": 0, "attention_3d": layers, "pack_matmuls": layers, "inplace_kv_cache": layers}
    gelu = int(spec.activation == "gelu_tanh")
    return {**common, "fuse_rms_norm": _norms(spec) * layers + 1, "fuse_skip_norm": 2 * layers,
            "fuse_gelu": gelu * layers, "fuse_silu": (1 - gelu) * layers, "fuse_rotary": 2 * layers,
            "attention_3d": layers if full_rotary else 0, "pack_matmuls": 2 * layers,
            "inplace_kv_cache": layers if full_rotary else 0}


def _norms(spec) -> int:
    """RMSNorms a block: two, four with sandwich norms (Gemma), two more with a per-head QK-norm (Qwen3, Gemma 3)."""
    return 2 + 2 * spec.sandwich_norms + 2 * spec.qk_norm


def _expected_trt(spec) -> dict:
    """The trt pipeline: standard ops only, attention left as MatMul/Softmax (no fp32 fused kernel in TRT)."""
    layers, rope = spec.num_layers, spec.family != "gpt2"
    return {"embedding_gather": int(spec.tie_word_embeddings), "rms_normalization": (_norms(spec) * layers + 1) * rope,
            "fuse_rotary": 2 * layers * rope, "kv_cache_scatter": layers, "last_token_logits": 1}


def _check_counts(folder):
    manifest = read_manifest(folder)
    spec = manifest.spec
    passes = {k: v for k, v in manifest.passes.items() if not k.startswith("cleanup")}
    if manifest.target == "trt":
        assert passes == _expected_trt(spec) and manifest.kv_cache == "scatter_buffer"
        assert not [op for op in manifest.graph["ops"] if "." in op]  # no contrib-domain op
        return
    assert passes == _expected(spec)
    assert manifest.kv_cache == ("shared_buffer" if passes["inplace_kv_cache"] else "concat")
    graph = manifest.graph
    assert graph["nodes"] * 2 <= graph["nodes_before_passes"]
    assert not _unread_outputs(folder / "model.onnx")


def _unread_outputs(path) -> list[str]:
    """Named outputs of the saved graph's nodes that no node and no graph output reads (ONNX Runtime computes
    and allocates every named output)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    return [f"{node.op_type}:{name}" for node in graph.node for name in node.output if name and name not in read]


@pytest.mark.parametrize("target", ["ort", "trt"])
def test_tiny_fusion_counts(tiny, target, export_dir):
    _check_counts(export_dir(tiny, target))


@pytest.mark.smollm2
@pytest.mark.parametrize("target", ["ort", "trt"])
def test_smollm2_fusion_counts(target, export_dir):
    _check_counts(export_dir("smollm2-135m", target))


def test_pipeline_edits():
    default = ["cleanup", "fuse_rms_norm", "last_token_logits"]
    assert resolve_pipeline(default, "-last_token_logits") == ["cleanup", "fuse_rms_norm"]
    assert resolve_pipeline(default, "-fuse_rms_norm,+pack_matmuls") == ["cleanup", "last_token_logits",
                                                                         "pack_matmuls"]
    assert resolve_pipeline(default, "cleanup") == ["cleanup"]
    with pytest.raises(LuodiError, match="unknown pass.*fuse_everything"):
        resolve_pipeline(default, "+fuse_everything")


def test_all_logits_kept_when_the_pass_is_dropped(tmp_path):
    import luodi
    from luodi.exporters import export_model

    out = export_model("tiny-llama", out=tmp_path / "all", passes="-last_token_logits", progress=False)
    manifest = read_manifest(out)
    assert manifest.logits_window is None and "last_token_logits" not in manifest.passes
    assert luodi.load(out).generate("Hello", max_new_tokens=4).token_ids


def test_inspect_cli(export_dir):
    folder = export_dir("tiny-qwen2")
    proc = subprocess.run([sys.executable, "-m", "luodi", "inspect", str(folder), "--json"], capture_output=True,
                          text=True)
    report = json.loads(proc.stdout)
    assert report["nodes"] < report["nodes_before_passes"]
    assert report["fused_ops"]["com.microsoft.GroupQueryAttention"] == 2 and "RotaryEmbedding" not in report["ops"]
    assert report["kv_bytes_at_max_context"] == 2 * 2 * 2 * 16 * 256 * 4
    assert report["weight_bytes"] > 0 and report["passes"]["fuse_attention"] == 2
    text = subprocess.run([sys.executable, "-m", "luodi", "inspect", str(folder / "model.onnx")],
                          capture_output=True, text=True).stdout
    assert "nodes:" in text and "Attention" in text


@pytest.mark.parametrize("target", ["ort", "openvino", "trt"])
def test_exports_carry_no_source_paths(target, export_dir):
    """torch's per-node stack traces (this checkout's absolute paths) are dropped: an export does not depend on
    where luodi lives, and a bundle does not leak that path."""
    from pathlib import Path

    import luodi

    folder = export_dir("tiny-llama", target)
    checkout = str(Path(luodi.__file__).resolve().parent.parent)
    for path in folder.iterdir():
        if path.suffix in (".onnx", ".xml", ".json"):
            assert checkout not in path.read_bytes().decode("utf-8", "replace"), path
