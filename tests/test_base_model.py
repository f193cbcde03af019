"""A base model (no chat template, as Gemma 3 270M): plain prompts work on every path (generate, bench, eval,
greedy-check, bundles, Triton); every way of asking it for chat (--chat, chat messages, a Triton chat request)
is one clear line, never a traceback. tiny-llama with its template removed stands in for it."""

import json
import shutil

import pytest
from triton_stand_in import Request, load_model, text

import luodi
from luodi.bundles import make_bundle
from luodi.bundles.readme import device_readme
from luodi.manifest import read_manifest
from luodi.cli import main
from luodi.exporters import export_model
from luodi.loaders import resolve
from luodi.serving.triton import write_triton_repo
from luodi.workloads import workload

PROMPT = "Once upon a time the"
NO_TEMPLATE = "no chat template"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(the base model's Hugging Face folder, its ort export)."""
    tmp = tmp_path_factory.mktemp("base")
    folder = shutil.copytree(resolve("tiny-llama").hf_dir, tmp / "tiny-base")
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    export = export_model(str(folder), target="ort", out=tmp / "tiny-base-ort", progress=False)
    assert luodi.load(export).tokenizer.chat_template is None
    return folder, export


def _one_line_error(capsys, code: int, needle: str = NO_TEMPLATE) -> None:
    err = capsys.readouterr().err
    assert code == 1 and needle in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("extra", [[], ["--json"], ["--backend", "torch"]])
def test_generate_chat_on_a_base_model_is_one_line(base, capsys, extra):
    folder, export = base
    model = str(folder) if "torch" in extra else str(export)
    _one_line_error(capsys, main(["generate", model, "--chat", "--prompt", "hi", "--max-new-tokens", "2", *extra]))
    assert main(["generate", model, "--prompt", PROMPT, "--max-new-tokens", "4", *extra]) == 0


def test_bench_eval_and_greedy_check_on_a_base_model(base, capsys, tmp_path):
    folder, export = base
    _one_line_error(capsys, main(["bench", str(export), "--chat", "--prompt", "hi", "--repeat", "1",
                                  "--new-tokens", "2"]))
    assert main(["bench", str(export), "--workload", "W1", "--repeat", "1", "--json"]) == 0
    plain = luodi.load(export).tokenizer.encode(workload("W1").message)  # a base model gets the bare question
    assert json.loads(capsys.readouterr().out)["prompt_tokens"] == len(plain)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPT + "\nThe quick brown fox\n")
    _one_line_error(capsys, main(["greedy-check", str(export), "--prompts", str(prompts), "--chat",
                                  "--source", str(folder), "--max-new-tokens", "4"]))
    assert main(["greedy-check", str(export), "--prompts", str(prompts), "--source", str(folder),
                 "--max-new-tokens", "8"]) == 0
    assert "2/2 prompts give identical greedy token ids" in capsys.readouterr().out
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog. Paris is the capital of France. " * 8)
    assert main(["eval", str(export), "--text", str(corpus), "--window", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["perplexity"] > 1


def test_bundle_readme_and_triton_of_a_base_model(base, tmp_path, monkeypatch):
    _, export = base
    bundle = make_bundle(export, tmp_path / "tiny-base-ort.tar")
    lm = luodi.load(bundle, cache_dir=tmp_path / "cache")
    readme = (next((tmp_path / "cache").iterdir()) / "README.md").read_text()
    assert "--chat" not in readme and '"role"' not in readme and NO_TEMPLATE in readme
    chat_readme = device_readme(read_manifest(export), {}, bundle.name, chat=True)
    assert "--chat" in chat_readme and '"role"' in chat_readme and NO_TEMPLATE not in chat_readme
    for prompt in ('"Once upon a time"', '"The capital of France is"'):  # the README's own examples run
        assert prompt in readme and lm.generate(json.loads(prompt), max_new_tokens=2).token_ids
    with pytest.raises(ValueError, match=NO_TEMPLATE):
        lm.chat([{"role": "user", "content": "hi"}], max_new_tokens=2)

    repo = tmp_path / "repo"
    write_triton_repo(bundle, repo, threads=1)
    monkeypatch.setenv("LUODI_CACHE", str(tmp_path / "triton-cache"))
    model = load_model(repo / "tiny-base-ort" / "1" / "model.py", monkeypatch).TritonPythonModel()
    config = json.dumps({"parameters": {"bundle": {"string_value": bundle.name}}})
    model.initialize({"model_config": config, "model_repository": str(repo / "tiny-base-ort"), "model_version": "1"})
    plain = Request({"text_input": text(PROMPT), "max_tokens": [4]})
    chat = Request({"text_input": text(json.dumps([{"role": "user", "content": "hi"}])), "chat": [True]})
    assert model.execute([chat, plain]) is None
    (error, flags), = chat.sent
    assert flags == 1 and NO_TEMPLATE in error.error and "\n" not in error.error
    (answer, flags), = plain.sent
    assert flags == 1 and answer.outputs["text_output"] == lm.generate(PROMPT, max_new_tokens=4).text
