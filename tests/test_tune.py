"""`luodi tune` on tiny-llama: the real export + eval + bench path once (its choice within the budget, report,
chart, output, resume), then the choice, budget and resume rules with a measurer whose numbers are fixed (its
exports are copies of one real export), so they run in seconds. No timing assertions."""

import json
import shutil

import pytest

import luodi
from luodi.cli import main
from luodi.errors import LuodiError
from luodi.manifest import read_manifest
from luodi.tune import load_plan, run_tune
from luodi.tune import pipeline
from luodi.tune.measure import Measurer
from luodi.tune.state import STATE

PNG = b"\x89PNG\r\n\x1a\n"
WORKLOADS = """workloads:
  chat: {message: "What is the capital of France?", new_tokens: 6}
  long-prompt: {text_file: /usr/share/common-licenses/GPL-3, prompt_tokens: 48, new_tokens: 3}
speed: {repeat: 1}
quality: {text: /usr/share/common-licenses/Apache-2.0, max_tokens: 96, window: 48}
threads: [1]
"""


def _plan(tmp_path, builds: str, extra: str = "", **kwargs):
    path = tmp_path / "candidates.yaml"
    path.write_text(f"reference: fp32\nbuilds:\n{builds}{extra}{WORKLOADS}")
    return load_plan(path, **kwargs)


def _within_and_fastest(report):
    rows = [r for r in report["candidates"] if r["status"] == "measured"]
    chosen = next(r for r in rows if r["id"] == report["chosen"])
    within = [r for r in rows if r["quality_loss_pct"] <= report["budget_pct"]]
    assert chosen["quality_loss_pct"] <= report["budget_pct"]
    assert chosen["score"] == max(r["score"] for r in within)
    return chosen


def test_tune_real_export_and_measurements(tmp_path, monkeypatch):
    """Two real builds and a speculative configuration: the choice, its output, the report and the chart; a rerun
    measures nothing again and chooses the same."""
    plan = _plan(tmp_path, "  fp32: {target: ort, precision: fp32}\n  int4: {target: ort, precision: int4}\n",
                 "speculation: {draft: int4, targets: [fp32]}\n")
    out = tmp_path / "tune"
    report = run_tune("tiny-llama", plan, out, budget_pct=5.0, progress=False)
    assert [r["status"] for r in report["candidates"]] == ["measured"] * 3
    fp32 = next(r for r in report["candidates"] if r["build"] == "fp32" and not r["speculation"])
    assert fp32["quality_loss_pct"] == 0.0 and fp32["perplexity"] == report["reference"]["perplexity"] > 1
    spec = next(r for r in report["candidates"] if r["speculation"])
    assert spec["perplexity"] == fp32["perplexity"]  # speculation keeps the target's output
    chosen = _within_and_fastest(report)
    best = read_manifest(out / "best")
    assert (best.target, best.precision) == ("ort", chosen["precision"])
    assert luodi.load(out / "best").generate("hello", max_new_tokens=2).token_ids
    assert ((out / "best-draft").is_dir()) == bool(chosen["speculation"])
    saved = json.loads((out / "report.json").read_text())
    assert saved["chosen"] == report["chosen"] and len(saved["candidates"]) == 3
    assert all(r["chat_decode_tokens_per_s"] > 0 and r["long_prompt_ttft_ms"] > 0 for r in saved["candidates"])
    assert (out / "tune.png").read_bytes().startswith(PNG)
    table = (out / "report.md").read_text()
    assert table.count("\n| ort ") == 3 and f"**Chosen: {report['chosen']}**" in table

    calls = []
    for name in ("export", "quality", "speed"):
        monkeypatch.setattr(Measurer, name, lambda *a, name=name: calls.append(name))
    again = run_tune("tiny-llama", plan, out, budget_pct=5.0, progress=False)
    assert calls == [] and again["chosen"] == report["chosen"]


LOSS = {"fp32": 0.0, "int8": 0.8, "int4": 6.0, "int4-minmax": 2.5}  # percent over fp32, made up for the rules
SPEED = {"fp32": 30.0, "int8": 60.0, "int4": 120.0, "int4-minmax": 90.0}  # decode tokens/s; TTFT the inverse


class FixedMeasurer:
    """Exports are copies of one real tiny export; quality and speed are fixed numbers per build."""

    def __init__(self, source):
        self.source, self.calls = source, []

    def export(self, build, out, reference=None):
        self.calls.append(("export", build.name))
        shutil.copytree(self.source, out, dirs_exist_ok=True)
        return out

    def quality(self, folder, inference_precision, threads):
        self.calls.append(("quality", folder.name))
        return {"perplexity": 100.0 * (1 + LOSS[folder.name] / 100)}

    def speed(self, folder, candidate, draft):
        self.calls.append(("speed", candidate.id))
        tps = SPEED[folder.name] * (1.5 if draft else 1.0) * candidate.threads
        return {"chat": {"decode_tokens_per_s": tps, "ttft_s": 1 / tps}, "long-prompt": {"decode_tokens_per_s": tps,
                                                                                         "ttft_s": 1 / tps}}


BUILDS = "".join(f"  {name}: {{target: ort, precision: {name[:4]}{', method: minmax' if 'minmax' in name else ''}}}\n"
                 for name in LOSS)


@pytest.fixture
def fixed(export_dir):
    return FixedMeasurer(export_dir("tiny-llama"))


@pytest.mark.parametrize("budget, want", [(0.0, "fp32"), (1.0, "int8"), (3.0, "int4-minmax"), (10.0, "int4")])
def test_the_choice_is_the_fastest_within_the_budget(tmp_path, fixed, budget, want):
    report = run_tune("tiny-llama", _plan(tmp_path, BUILDS), tmp_path / "t", budget, measurer=fixed, progress=False)
    assert _within_and_fastest(report)["build"] == want
    verdicts = {r["build"]: r["verdict"] for r in report["candidates"]}
    assert all(v.startswith("over the quality budget") for b, v in verdicts.items() if LOSS[b] > budget)


def test_an_impossible_budget_names_the_closest_candidate(tmp_path, fixed, monkeypatch, capsys):
    """Without the fp32 build among the candidates (only other targets tuned), nothing is within 0.5%."""
    builds = "  fp32: {target: ort, precision: fp32}\n" + "".join(
        f"  {n}: {{target: openvino, precision: {n[:4]}}}\n" for n in ("int8", "int4"))
    path = tmp_path / "c.yaml"
    path.write_text(f"reference: fp32\nbuilds:\n{builds}{WORKLOADS}")
    with pytest.raises(LuodiError, match=r"no candidate is within 0.5%.*closest is int8 \| - \| 1 threads \| plain "
                                         r"\(\+0.80%\)"):
        run_tune("tiny-llama", load_plan(path, targets=["openvino"]), tmp_path / "t", 0.5, measurer=fixed,
                 progress=False)
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report["chosen"] is None and not (tmp_path / "t" / "best").exists()
    assert (tmp_path / "t" / "tune.png").read_bytes().startswith(PNG)
    monkeypatch.setattr(pipeline, "Measurer", lambda model, plan: fixed)
    assert main(["tune", "tiny-llama", "--candidates", str(path), "--targets", "openvino", "--max-quality-loss",
                 "0.5%", "--out", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "closest is int8" in err


def test_interrupted_tune_resumes_and_chooses_the_same(tmp_path, fixed):
    """A one-minute time budget stops the run after two candidates (each clock reading advances 20 s);
    the rerun measures only the rest, and the choice equals an uninterrupted run's."""
    plan = _plan(tmp_path, BUILDS, "speculation: {draft: int4-minmax, targets: [fp32]}\n")
    whole = run_tune("tiny-llama", plan, tmp_path / "whole", 3.0, measurer=FixedMeasurer(fixed.source),
                     progress=False)
    now = [0.0]

    def clock():
        now[0] += 20.0
        return now[0]

    first = run_tune("tiny-llama", plan, tmp_path / "t", 3.0, budget_minutes=1.0, measurer=fixed, clock=clock,
                     progress=False)
    measured = [r["id"] for r in first["candidates"] if r["status"] == "measured"]
    assert first["stopped_by_time_budget"] and 0 < len(measured) < len(plan.candidates)
    assert all(r["status"].startswith("not measured: the time budget") for r in first["candidates"]
               if r["id"] not in measured)
    fixed.calls.clear()
    second = run_tune("tiny-llama", plan, tmp_path / "t", 3.0, measurer=fixed, progress=False)
    speeds = [c for kind, c in fixed.calls if kind == "speed"]
    assert sorted(speeds) == sorted(c.id for c in plan.candidates if c.id not in measured)
    assert second["chosen"] == whole["chosen"] and not second["stopped_by_time_budget"]


def test_no_time_stops_before_any_candidate(tmp_path, fixed):
    with pytest.raises(LuodiError, match="no candidate was measured"):
        run_tune("tiny-llama", _plan(tmp_path, BUILDS), tmp_path / "t", 3.0, budget_minutes=0, measurer=fixed,
                 progress=False)
    assert fixed.calls == []
    state = json.loads((tmp_path / "t" / STATE).read_text()) if (tmp_path / "t" / STATE).exists() else {}
    assert not state.get("candidates")
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert {r["status"] for r in report["candidates"]} == {pipeline.NOT_MEASURED}


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["tune", "tiny-llama", "--out", str(tmp_path / "other")]) == 1
    assert "not a luodi tune folder" in capsys.readouterr().err
    assert main(["tune", "tiny-llama", "--targets", "nope", "--out", str(tmp_path / "t")]) == 1
    assert "unknown or not yet available target 'nope'" in capsys.readouterr().err
    for bad in (["--max-quality-loss", "-1%"], ["--max-quality-loss", "lots"], ["--budget-minutes", "-2"],
                ["--workload", "batch"]):
        with pytest.raises(SystemExit) as e:
            main(["tune", "tiny-llama", *bad])
        assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "t").exists() and (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_bf16_is_listed_as_not_applicable_where_the_cpu_lacks_it(tmp_path, monkeypatch):
    from luodi.runtimes import openvino

    monkeypatch.setattr(openvino, "CPU_CAPABILITY", {"bf16": "NO_SUCH_CAPABILITY", "f16": "FP16"})
    plan = _plan(tmp_path, "  fp32: {target: ort, precision: fp32}\n  ov: {target: openvino, precision: fp32}\n",
                 "inference_precision: {openvino: [f32, bf16]}\n")
    reasons = {c.id: c.not_applicable for c in plan.candidates}
    assert reasons["ov | f32 | 1 threads | plain"] is None and reasons["fp32 | - | 1 threads | plain"] is None
    assert "cannot compute in bf16" in reasons["ov | bf16 | 1 threads | plain"]


def test_new_measurement_settings_measure_again_but_keep_the_exports(tmp_path, fixed):
    run_tune("tiny-llama", _plan(tmp_path, BUILDS), tmp_path / "t", 3.0, measurer=fixed, progress=False)
    assert sorted(name for kind, name in fixed.calls if kind == "export") == sorted(LOSS)
    fixed.calls.clear()
    run_tune("tiny-llama", _plan(tmp_path, BUILDS, eval_tokens=64), tmp_path / "t", 3.0, measurer=fixed,
             progress=False)
    kinds = [kind for kind, _ in fixed.calls]
    assert "export" not in kinds and kinds.count("quality") == len(LOSS) and kinds.count("speed") == len(LOSS)


@pytest.mark.parametrize("candidates, message", [
    ("reference: fp32\nbuilds: [fp32]\n" + WORKLOADS, "builds must be a mapping"),
    ("reference: [fp32]\nbuilds:\n  fp32: {target: ort}\n" + WORKLOADS, "reference must be a build's name"),
    ("reference: fp32\nbuilds:\n  fp32: {target: ort}\n  ../../escape: {target: ort}\n" + WORKLOADS, "build name"),
    ("reference: fp32\nbuilds:\n  fp32: {target: ort}\n  /tmp/abs: {target: ort}\n" + WORKLOADS, "build name"),
    ("reference: fp32\nbuilds:\n  fp32: {target: ort}\n  q: {target: ort, precision: int4, group_size: big}\n"
     + WORKLOADS, "group_size 'big' is not a integer"),
    ("reference: fp32\nbuilds:\n  fp32: {target: ort}\n" + WORKLOADS.replace("repeat: 1", "repeat: -1"),
     "speed.repeat must be a positive integer"),
    ("reference: fp32\nbuilds:\n  fp32: {target: ort}\n" + WORKLOADS.replace("window: 48", "window: zero"),
     "quality.window must be a positive integer"),
    ("reference: fp32\nbuilds:\n  fp32: {target: ort}\nspeculation: [fp32]\n" + WORKLOADS, "speculation must be"),
    ("reference: fp32\nbuilds:\n  fp32: {target: ort}\nspeculation: {draft: fp32, targets: fp32}\n" + WORKLOADS,
     "speculation targets must be a list"),
    ("reference: fp32\nbuilds:\n  fp32: {target: ort}\n" + WORKLOADS.replace("threads: [1]", "threads: 4"),
     "threads must be a list"),
    ("reference: fp32\nbuilds:\n  fp32: {target: ort}\nquality: {max_tokens: 3}\nworkloads: {chat: W1}\n",
     "quality needs a text entry"),
])
def test_malformed_candidates_are_one_line_errors(tmp_path, capsys, candidates, message):
    """A hostile --candidates file is refused before anything is written, in one line naming what is wrong."""
    path = tmp_path / "candidates.yaml"
    path.write_text(candidates)
    assert main(["tune", "tiny-llama", "--candidates", str(path), "--out", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "t").exists() and not (tmp_path.parent / "escape").exists()
