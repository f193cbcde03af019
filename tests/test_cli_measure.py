"""`luodi ceiling` and `luodi greedy-check` on a tiny model, and the luodi commands scripts/gpu_check.sh runs."""

import json
import re
import shlex
from pathlib import Path

import pytest

from luodi import ceiling, greedy_check
from luodi.cli import _parser, main
from luodi.manifest import read_manifest

GPU_CHECK = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.sh"


def test_read_bandwidth_is_a_rate():
    median, best = ceiling.read_bandwidth(threads=1, repeat=3, gib=1 / 64)
    assert 0 < median <= best


def test_ceiling_is_bandwidth_over_the_weights_a_step_reads(export_dir, capsys, monkeypatch):
    out = export_dir("tiny-llama")
    step = ceiling.bytes_per_step(out)
    assert 0 < step <= read_manifest(out).memory.weight_bytes
    monkeypatch.setattr(ceiling, "read_bandwidth", lambda threads, repeat: (step * 1000.0, step * 1250.0))
    assert main(["ceiling", str(out), "--repeat", "3", "--measured", "500,250", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ceiling_tokens_per_s"] == pytest.approx(1000) and report["best_ceiling_tokens_per_s"] == 1250
    assert [m["share"] for m in report["measured"]] == pytest.approx([0.5, 0.25])
    assert main(["ceiling", str(out), "--measured", "500"]) == 0
    assert "500.0 tokens/s = 50% of the ceiling" in capsys.readouterr().out


def test_ceiling_refuses_a_bad_speed(capsys):
    with pytest.raises(SystemExit) as e:
        main(["ceiling", "anywhere", "--measured", "40,fast"])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("chat", [False, True])
def test_greedy_check_agrees_with_transformers(export_dir, tmp_path, capsys, chat):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The river rose overnight and\nOnce upon a time\n")
    argv = ["greedy-check", str(export_dir("tiny-llama")), "--prompts", str(prompts), "--max-new-tokens", "8"]
    assert main(argv + ["--chat"] * chat + ["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["prompts"]
    assert [r["identical"] for r in rows] == [True, True] and all(r["tokens"] > 0 for r in rows)
    assert not any("max_abs_logit_diff" in r for r in rows)


@pytest.mark.parametrize("mode", [["--joined"], ["--num-beams", "3"]])
def test_greedy_check_joined_rows_and_beams_agree_with_transformers(export_dir, tmp_path, capsys, mode):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The river rose overnight and\nOnce upon a time\nA\nIn the year two thousand, the city of\n")
    argv = ["greedy-check", str(export_dir("tiny-llama")), "--prompts", str(prompts), "--max-new-tokens", "12"]
    assert main(argv + mode + ["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["prompts"]
    assert [r["identical"] for r in rows] == [True] * 4 and all(r["tokens"] > 0 for r in rows)


def test_joined_rows_share_decode_steps(export_dir, monkeypatch):
    """The joined check really overlaps its rows: a later prompt arrives while the earlier ones still decode."""
    import luodi
    from luodi.runtimes.scheduler import Scheduler

    lm = luodi.load(export_dir("tiny-llama"), verify=False)
    widths, step = [], Scheduler.step
    monkeypatch.setattr(Scheduler, "step", lambda self: widths.append(len(self.running)) or step(self))
    prompts = [lm.tokenizer.encode(p) for p in ("Once upon a time", "The river rose", "In the year")]
    got = greedy_check.joined_ids(lm, prompts, 16)
    assert got == [lm.generate(p, max_new_tokens=16).token_ids for p in prompts]
    assert max(widths) == 3 and widths.index(3) >= 2 * greedy_check.JOIN_EVERY


def test_greedy_check_measures_the_logit_difference(export_dir, tmp_path, capsys, monkeypatch):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The river rose overnight and\n")
    argv = ["greedy-check", str(export_dir("tiny-llama")), "--prompts", str(prompts), "--max-new-tokens", "6",
            "--logits"]
    assert main(argv + ["--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["prompts"]
    assert 0 < row["max_abs_logit_diff"] < 1e-4
    from luodi.runtimes import onnxruntime as ort_runtime

    forward = ort_runtime.OrtBackend.forward_window
    monkeypatch.setattr(ort_runtime.OrtBackend, "forward_window", lambda *a: forward(*a) + 0.01)
    assert main(argv) == 0  # a uniform shift keeps every argmax
    lines = capsys.readouterr().out.splitlines()
    assert "max |logit diff| 1.00e-02" in lines[0] and lines[-1] == "max |logit diff| over all prompts 1.00e-02"


def test_greedy_check_fails_on_a_difference(export_dir, tmp_path, capsys, monkeypatch):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\n")
    real = greedy_check.reference_greedy

    def first_token_off(*args):
        ids, new = real(*args)
        return ids, [new[0] + 1] + new[1:]

    monkeypatch.setattr(greedy_check, "reference_greedy", first_token_off)
    assert main(["greedy-check", str(export_dir("tiny-llama")), "--prompts", str(prompts),
                 "--max-new-tokens", "4"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "DIFFERENT    4 vs   4 tokens  'Once upon a time'", "0/1 prompts give identical greedy token ids"]


def test_gpu_check_runs_only_commands_luodi_parses():
    script = GPU_CHECK.read_text().replace("\\\n", " ")
    commands = [line.split("-m luodi", 1)[1] for line in script.splitlines() if '"$PY" -m luodi' in line]
    assert len(commands) == 3
    for command in commands:
        _parser().parse_args(shlex.split(re.sub(r"\$\w+", "x", command)))


def test_a_joined_check_refuses_beams(export_dir):
    import luodi
    from luodi.errors import LuodiError

    lm = luodi.load(export_dir("tiny-llama"), verify=False)
    with pytest.raises(LuodiError, match="joined check runs greedy rows"):
        greedy_check.greedy_check(lm, "tiny-llama", ["Once upon a time"], 4, chat=False, num_beams=2, joined=True)
    with pytest.raises(SystemExit):  # the CLI takes one of the two
        _parser().parse_args(["greedy-check", "x", "--prompts", "p", "--joined", "--num-beams", "2"])
