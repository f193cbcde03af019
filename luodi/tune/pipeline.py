"""luodi tune's run: for each candidate, export its build (once per build), measure its quality (once per build and
inference precision) and its speed, recording every finished step in the tune folder's state; then choose the
fastest within the quality budget, write it (an export folder, or a bundle) with the report and the chart.

The tune folder (--out): tune-state.json, exports/<build>/ (each build's export, kept for resuming), report.md,
report.json, tune.png, and best/ (best.tar with --bundle; best-draft beside it when the choice speculates).
"""

import shutil
import time
from pathlib import Path

from ..errors import LuodiError, one_line
from ..fileio import discard
from ..manifest import MANIFEST
from ..outputs import BUNDLE_ARCHIVE, EXPORT_FOLDER, output_folder, output_kind
from ..progress import count_bar
from .candidates import Build, Candidate, Plan, quality_key
from .choose import choose, no_choice_error, row, score
from .measure import Measurer
from .plot import plot_tune
from .report import run_command, write_report
from .state import STATE, TuneState

PLOT = "tune.png"
NOT_MEASURED = "not measured: the time budget (--budget-minutes) ran out first"


def claim_tune_folder(out: Path) -> None:
    """Refuse, in one line, an --out that holds anything but an earlier tune (nothing else is written over)."""
    out = Path(out)
    if out.is_symlink() or out.is_file():
        raise LuodiError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / STATE).is_file():
        raise LuodiError(f"{out} exists and is not a luodi tune folder (no {STATE}); choose another --out")


class _Run:
    """One tune run's steps over the state: each returns a recorded result or measures and records it."""

    def __init__(self, model: str, plan: Plan, out: Path, measurer, state: TuneState):
        self.model, self.plan, self.out, self.measurer, self.state = model, plan, out, measurer, state
        self.exports = out / "exports"

    def export(self, build: Build) -> Path:
        folder = self.exports / build.name
        settings = {"model": self.model, **build.settings()}
        done = self.state.get("exports", build.name, settings)
        if done is not None and "failed" in done:
            raise LuodiError(done["failed"])
        if done is not None and (folder / MANIFEST).is_file():
            return folder
        reference = None if build is self.plan.reference else self.export(self.plan.reference)
        try:
            self.measurer.export(build, folder, reference)
        except LuodiError as e:
            self.state.put("exports", build.name, settings, {"failed": f"export failed: {one_line(e, 300)}"})
            raise
        self.state.put("exports", build.name, settings, {"folder": build.name})
        return folder

    def quality_settings(self, build: Build, inference_precision: str | None) -> dict:
        return {"model": self.model, "build": build.settings(), "inference_precision": inference_precision}

    def quality(self, build: Build, inference_precision: str | None, threads: int) -> dict:
        key, settings = quality_key(build, inference_precision), self.quality_settings(build, inference_precision)
        done = self.state.get("quality", key, settings)
        if done is None:
            done = self.measurer.quality(self.export(build), inference_precision, threads)
            self.state.put("quality", key, settings, done)
        return done

    def candidate(self, c: Candidate) -> None:
        """Measure one candidate (its reference and build first); a LuodiError is recorded as its failure."""
        try:
            self.quality(self.plan.reference, None, c.threads)
            self.quality(c.build, c.inference_precision, c.threads)
            draft = self.export(c.draft) if c.draft else None
            result = {"speed": self.measurer.speed(self.export(c.build), c, draft)}
        except LuodiError as e:
            result = {"failed": f"failed: {one_line(e, 300)}"}
        self.state.put("candidates", c.id, c.settings(), result)

    def rows(self, stopped: bool) -> tuple[list[dict], dict | None]:
        reference = self.plan.reference
        ref = self.state.get("quality", quality_key(reference, None), self.quality_settings(reference, None))
        rows = []
        for c in self.plan.candidates:
            record = None if c.not_applicable else self.state.get("candidates", c.id, c.settings())
            quality = self.state.get("quality", c.quality_key, self.quality_settings(c.build, c.inference_precision))
            if c.not_applicable:
                rows.append(row(c, c.not_applicable, None, None, None))
            elif record is None:
                rows.append(row(c, NOT_MEASURED if stopped else "not measured", None, None, None))
            elif "failed" in record:
                rows.append(row(c, record["failed"], None, None, None))
            else:
                rows.append(row(c, None, quality["perplexity"], ref["perplexity"], record["speed"]))
        return rows, ref


def _write_best(out: Path, chosen: Candidate, exports: Path, bundle: bool) -> tuple[Path, Path | None]:
    """Copy (or bundle) the chosen build's export, and its draft's when it speculates, into the tune folder."""
    from ..bundles import make_bundle

    written = []
    for name, build in (("best", chosen.build), ("best-draft", chosen.draft)):
        stale = [out / name, out / f"{name}.tar"]
        target = out / (f"{name}.tar" if bundle else name)
        if build is not None:
            if bundle:
                make_bundle(exports / build.name, target, force=True)
            else:
                with output_folder(target, EXPORT_FOLDER, force=True) as tmp:
                    shutil.copytree(exports / build.name, tmp, dirs_exist_ok=True)
            written.append(target)
        else:
            written.append(None)
        for path in stale:  # an earlier run's other form, or a draft this choice does not use
            if path != written[-1] and output_kind(path) in (EXPORT_FOLDER, BUNDLE_ARCHIVE):
                discard(path)
    return written[0], written[1]


def run_tune(model: str, plan: Plan, out: Path, budget_pct: float, budget_minutes: float | None = None,
             bundle: bool = False, measurer=None, clock=time.monotonic, progress: bool = True) -> dict:
    """Tune `model` over `plan` into the folder `out` (resuming what an earlier run there finished); the report.

    Stops starting candidates once `budget_minutes` have passed. Raises a one-line LuodiError naming the closest
    candidate when none measured is within `budget_pct` percent of fp32 perplexity (report and chart written
    first)."""
    out = Path(out)
    claim_tune_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(model, plan, out, measurer or Measurer(model, plan), TuneState(out, plan.protocol(model)))
    start = clock()
    runnable = [c for c in plan.candidates if c.not_applicable is None]
    todo = [c for c in runnable if run.state.get("candidates", c.id, c.settings()) is None]
    stopped = False
    with count_bar(len(runnable), "luodi tune", "config", initial=len(runnable) - len(todo), enabled=progress) as bar:
        for c in todo:
            if budget_minutes is not None and clock() - start >= budget_minutes * 60:
                stopped = True
                break
            bar.set_description_str(c.id)
            run.candidate(c)
            bar.update(1)
    rows, ref = run.rows(stopped)
    score(rows, plan.workloads)
    chosen_row = choose(rows, budget_pct)
    report = {"model": model, "budget_pct": budget_pct, "workload": " and ".join(plan.workloads),
              "reference": {"build": plan.reference.name, "perplexity": ref["perplexity"] if ref else None},
              "protocol": {"workloads": {k: _describe(k, w) for k, w in plan.workloads.items()}, "repeat": plan.repeat,
                           "quality_text": str(plan.quality.text), "quality_tokens": plan.quality.max_tokens,
                           "quality_window": plan.quality.window, "candidates_file": str(plan.source)},
              "chosen": chosen_row["id"] if chosen_row else None, "output": None, "run": None, "error": None,
              "elapsed_s": clock() - start, "stopped_by_time_budget": stopped, "plot": PLOT, "candidates": rows}
    if chosen_row:
        chosen = next(c for c in plan.candidates if c.id == chosen_row["id"])
        best, draft = _write_best(out, chosen, run.exports, bundle)
        report |= {"output": str(best), "draft": str(draft) if draft else None, "run": run_command(chosen_row, best, draft)}
    else:
        report["error"] = str(no_choice_error(rows, budget_pct))
    write_report(out, report)
    plot_tune(report, out / PLOT)
    if not chosen_row:
        raise no_choice_error(rows, budget_pct)
    return report


def _describe(kind: str, work) -> str:
    prompt = f"{work.prompt_tokens} tokens of {work.text_file}" if work.text_file else f"chat message {work.message!r}"
    return ("" if work.name == kind else f"{work.name}: ") + f"{prompt}, {work.new_tokens} new tokens"
