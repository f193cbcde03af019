"""`luodi bench --workload`: the workloads of configs/workloads.yaml tokenized by the model's own tokenizer as the
anchor kit's make_prompts.py does with transformers, and equal to the kit's ids for SmolLM2."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from luodi.cli import main
from luodi.loaders import resolve
from luodi.loaders.hf_folder import load_reference_tokenizer, save_tokenizer_files
from luodi.tokenizer import Tokenizer
from luodi.workloads import Workload, prompt_ids, workload

KIT_PROMPTS = Path(os.environ.get("ANCHORS_DIR", Path.home() / ".cache" / "luodi-anchors")) / "data" / "prompts.json"


def _kit_ids(tok, message: str, text: str) -> tuple[list[int], list[int]]:
    """W1 and W2 exactly as shared/anchors/make_prompts.py makes them with transformers."""
    msgs = [{"role": "user", "content": message}]
    if tok.chat_template:
        w1 = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    else:
        w1 = tok(message)["input_ids"]
    return list(w1), tok(text, add_special_tokens=False)["input_ids"][:512]


def _tokenizers(name: str, tmp_path: Path):
    """luodi's tokenizer of an export's tokenizer files (as the exporter writes them) and transformers' own."""
    hf_dir = resolve(name).hf_dir
    save_tokenizer_files(hf_dir, tmp_path)
    return Tokenizer(tmp_path), load_reference_tokenizer(hf_dir)


def test_definitions_match_the_anchor_kit():
    w1, w2 = workload("W1"), workload("W2")
    assert (w1.message, w1.new_tokens) == ("What is the capital of France?", 128)
    assert (w2.text_file, w2.prompt_tokens, w2.new_tokens) == (Path("/usr/share/common-licenses/GPL-3"), 512, 32)


def test_tiny_ids_equal_transformers_with_and_without_a_chat_template(tmp_path):
    ours, theirs = _tokenizers("tiny-llama", tmp_path)
    text = tmp_path / "text.txt"
    text.write_text("The licenses for most software are designed to take away your freedom to share it. " * 40)
    w1, w2 = workload("W1"), replace(workload("W2"), text_file=text)
    want_w1, want_w2 = _kit_ids(theirs, w1.message, text.read_text())
    assert prompt_ids(w1, ours) == want_w1 and prompt_ids(w2, ours) == want_w2 and len(want_w2) == 512
    ours.chat_template = theirs.chat_template = None  # a base model: the plain text with its BOS
    assert prompt_ids(w1, ours) == _kit_ids(theirs, w1.message, "")[0] == theirs(w1.message)["input_ids"]


def test_bench_runs_a_workload_and_names_a_missing_text_file(export_dir, capsys, monkeypatch):
    out = export_dir("tiny-llama")
    assert main(["bench", str(out), "--workload", "W1", "--repeat", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prompt_tokens"] == len(prompt_ids(workload("W1"), Tokenizer(out))) and report["new_tokens"] == 128
    missing = Workload("W2", 32, text_file=Path("/nowhere/GPL-3"), prompt_tokens=512)
    monkeypatch.setattr("luodi.workloads.workload", lambda name: missing)
    assert main(["bench", str(out), "--workload", "W2"]) == 1
    assert capsys.readouterr().err == "luodi: error: workload W2's text file /nowhere/GPL-3 does not exist\n"


def test_unknown_workload_is_one_line(export_dir, capsys):
    assert main(["bench", str(export_dir("tiny-llama")), "--workload", "W3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown workload 'W3'" in err and "W1, W2" in err


@pytest.mark.smollm2
def test_smollm2_ids_equal_the_kit_recipe(tmp_path):
    ours, theirs = _tokenizers("smollm2-135m", tmp_path)
    w1, w2 = workload("W1"), workload("W2")
    want_w1, want_w2 = _kit_ids(theirs, w1.message, w2.text_file.read_text())
    assert prompt_ids(w1, ours) == want_w1 and len(want_w1) == 37
    assert prompt_ids(w2, ours) == want_w2 and len(want_w2) == 512


@pytest.mark.smollm2
@pytest.mark.skipif(not KIT_PROMPTS.is_file(), reason=f"no anchor kit prompts at {KIT_PROMPTS} (run its setup.sh)")
def test_smollm2_ids_equal_the_kits_prompts_json(tmp_path):
    ours, _ = _tokenizers("smollm2-135m", tmp_path)
    kit = json.loads(KIT_PROMPTS.read_text())
    for name in ("W1", "W2"):
        work = workload(name)
        assert prompt_ids(work, ours) == kit[name]["ids"] and work.new_tokens == kit[name]["new_tokens"]
