"""luodi tune's measurements, through luodi's own code: exports by the export API, quality by `luodi eval`'s
perplexity (evaluate.py) through each export's runtime, speed by `luodi bench`'s runs (bench.py).

Measurer is the one object the tune pipeline asks; tests may pass another with the same three methods.
"""

from dataclasses import dataclass
from pathlib import Path

from .candidates import Build, Candidate, Plan


@dataclass
class Measurer:
    """Exports builds of `model` and measures them as `plan` says."""
    model: str
    plan: Plan

    def export(self, build: Build, out: Path, reference: Path | None = None) -> Path:
        """Export `build` into `out` (replacing an earlier export there); `reference`, an export of the same
        model, gives the tokenizer for the calibration text of a build that takes one."""
        from ..evaluate import read_text
        from ..exporters import export_model
        from ..quantization.calibration import calibration_ids
        from ..tokenizer import Tokenizer

        quantization = dict(build.quantization)
        if build.calib:
            quantization["calibration"] = calibration_ids(Tokenizer(reference), read_text(self.plan.quality.calib))
        return export_model(self.model, target=build.target, out=out, precision=build.precision, progress=False,
                            quantization=quantization or None, force=True)

    def quality(self, folder: Path, inference_precision: str | None, threads: int) -> dict:
        """Perplexity of the export on the plan's held-out text, through its own runtime (as luodi eval)."""
        import luodi

        from ..evaluate import evaluate_text, read_text, text_ids

        lm = luodi.load(folder, threads=threads, inference_precision=inference_precision or "f32", verify=False)
        ids, opening = text_ids(lm.tokenizer, read_text(self.plan.quality.text))
        report = evaluate_text(lm, ids, self.plan.quality.window, self.plan.quality.max_tokens, None, opening)
        return {key: report[key] for key in ("perplexity", "tokens_scored", "windows", "seconds")}

    def speed(self, folder: Path, candidate: Candidate, draft: Path | None) -> dict:
        """Per workload: median TTFT and decode tokens/s of `repeat` runs after a warm-up (luodi bench's run_bench),
        greedy with EOS suppressed, with the draft export speculating when given."""
        import luodi

        from ..bench import run_bench
        from ..workloads import prompt_ids

        options = {"threads": candidate.threads, "inference_precision": candidate.inference_precision or "f32",
                   "verify": False}
        lm = luodi.load(folder, **options)
        speculate = luodi.load(draft, **options | {"inference_precision": "f32"}) if draft else None
        speeds = {}
        for kind, work in self.plan.workloads.items():
            report = run_bench(lm, prompt_ids(work, lm.tokenizer), work.new_tokens, self.plan.repeat, ignore_eos=True,
                               speculate=speculate)
            speeds[kind] = {key: report[key] for key in ("prompt_tokens", "new_tokens", "ttft_s", "decode_tokens_per_s",
                                                         "ttft_s_all", "decode_tokens_per_s_all")}
        return speeds
