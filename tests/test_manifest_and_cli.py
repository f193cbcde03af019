"""Export folders: manifest contents, IO signature, and the CLI end to end on a tiny model."""

import json
import re
import subprocess
import sys

import numpy as np
import onnx

from luodi.fileio import sha256_file
from luodi.manifest import read_manifest


def test_manifest_describes_the_folder(export_dir):
    folder = export_dir("tiny-qwen2")
    m = read_manifest(folder)
    assert m.target == "ort" and m.precision == "fp32" and m.backend == "ort"
    assert m.source.name == "tiny-qwen2" and len(m.source.sha256) == 64
    assert {"model.onnx", "model.onnx.data", "tokenizer.json"} <= set(m.files)
    for name, entry in m.files.items():
        assert sha256_file(folder / name) == entry.sha256
    assert m.max_context == 256 and m.tokenizer_files and m.generation.eos_token_ids
    assert m.passes["cleanup"] > 0


def test_onnx_signature(export_dir):
    folder = export_dir("tiny-llama")
    model = onnx.load(folder / "model.onnx", load_external_data=False)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(model.graph.input) + list(model.graph.output)}
    assert dims["inputs_embeds"] == ["batch", "sequence", 64]  # embedding_input: the runtime looks tokens up
    assert dims["attention_mask"] == ["batch", "total_sequence"]
    assert dims["position_ids"] == ["batch", "sequence"]
    assert dims["past_key_values.1.value"] == ["batch", 2, "past_sequence", 16]
    assert dims["present.0.key"] == ["batch", 2, "total_sequence", 16]
    assert dims["logits"][:2] == ["batch", "logits_positions"]  # last_token_logits is in the ort pipeline
    weights = [init for init in model.graph.initializer if init.dims and np.prod(init.dims) >= 4096]
    assert weights and all(init.data_location == onnx.TensorProto.EXTERNAL for init in weights)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "luodi", *map(str, args)], capture_output=True, text=True)


def test_an_nncf_compressed_export_keeps_stdout_for_its_json(tmp_path):
    out = tmp_path / "tiny-llama-openvino-int4"
    proc = _cli("export", "tiny-llama", "--target", "openvino", "--precision", "int4", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["out"] == str(out)  # NNCF's bit-width table went to stderr
    assert "bitwidth distribution" in proc.stderr


def test_cli_export_generate_bench(tmp_path):
    out = tmp_path / "tiny-phi3-ort"
    proc = _cli("export", "tiny-phi3", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["out"] == str(out) and proc.stderr == ""
    proc = _cli("generate", out, "--prompt", "Paris is", "--max-new-tokens", "8", "--json")
    result = json.loads(proc.stdout)
    assert len(result["token_ids"]) <= 8 and {"ttft_s", "decode_tokens_per_s"} <= set(result["stats"])
    proc = _cli("bench", out, "--prompt-tokens", "20", "--new-tokens", "6", "--ignore-eos", "--repeat", "2",
                "--json")
    report = json.loads(proc.stdout)
    assert report["prompt_tokens"] == 20 and report["new_tokens"] == 6 and report["peak_rss_mb"] > 0
    assert report["ttft_s"] > 0 and report["decode_tokens_per_s"] > 0
    proc = _cli("models")
    assert "smollm2-135m" in proc.stdout and "gemma3-270m" in proc.stdout and "tiny-gpt2" in proc.stdout


def test_export_ends_with_its_time_and_peak_memory(tmp_path):
    proc = _cli("export", "tiny-llama", "--out", tmp_path / "tiny-llama-ort")
    assert proc.returncode == 0, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    found = re.fullmatch(r"done in \d+ s; peak RSS (\d+\.\d\d) GB(, reached in: [a-z0-9 ()]+)?", last)
    assert found and 0.05 < float(found[1]) < 64, last
