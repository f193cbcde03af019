"""compress_model: resolve -> plan -> (memory check) -> measure importance -> prune -> evaluate -> distill
-> evaluate -> write the Hugging Face folder and compression.json, atomically."""

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import LuodiError
from ..fileio import discard, ordinary_permissions
from ..outputs import COMPRESSED_MODEL, claim_output, output_folder
from ..progress import Stages
from .checkpoint import checkpoint_dir, load_state, open_run, run_key, save_run, save_state
from .distill import DistillSettings, distill, timed_steps
from .importance import measure_importance
from .memory import available_bytes, check_memory, distill_bytes
from .low_rank import RANK_STEP, factor_modules, merge_modules, planned_ranks
from .plan import HIDDEN_STEP, MLP_STEP, apply_removal, params_after, parse_axes, plan_removal, shape_after
from .quality import EVAL_TOKENS, EVAL_WINDOW, quality_report
from .record import write_record
from .student import build_student, check_prunable, param_count
from .texts import TRAINING_TEXT, evaluation_texts, token_windows, training_text

CALIBRATION_WINDOW = 256


@dataclass(frozen=True)
class CompressSettings:
    """What to remove and how to recover: a size target (`params`, a fraction of the original's parameters,
    or `size_budget_mb` of fp32 model files), the axes (`prune`: depth, heads, mlp, hidden, auto; comma-
    separated), calibration tokens, factoring (`low_rank`; alone it needs no size target), and the
    distillation (None or a zero budget: none)."""

    params: float | None = None
    size_budget_mb: float | None = None
    prune: str = "auto"
    calib_tokens: int = 4096
    low_rank: float | None = None  # a rank, or a fraction of each weight's full rank (low_rank.py)
    distill: DistillSettings | None = None

    def key(self) -> dict:
        """The settings that change the result."""
        return {"params": self.params, "size_budget_mb": self.size_budget_mb, "prune": self.prune,
                "calib_tokens": self.calib_tokens, "low_rank": self.low_rank,
                "distill": self.distill.key() if self.distill else None,
                # a checkpoint whose widths were cut in other steps is not resumed
                "steps": {"mlp": MLP_STEP, "hidden": HIDDEN_STEP, "rank": RANK_STEP}}


def _target_params(settings: CompressSettings, original: int) -> int | None:
    """The parameter count the size target allows (fp32: 4 bytes a parameter); None: no pruning (--low-rank
    alone)."""
    if settings.params is not None and settings.size_budget_mb is not None:
        raise LuodiError("give one size target: --params FRACTION or --size-budget MB")
    if settings.params is None and settings.size_budget_mb is None:
        if settings.low_rank is None:
            raise LuodiError("give a size target (--params FRACTION or --size-budget MB) or --low-rank")
        return None
    if settings.params is not None:
        if not 0 < settings.params < 1:
            raise LuodiError(f"--params {settings.params}: a fraction of the original's parameters, between 0 and 1")
        return int(settings.params * original)
    target = int(settings.size_budget_mb * 1e6 / 4)
    if target >= original:
        raise LuodiError(f"--size-budget {settings.size_budget_mb} MB: the original's fp32 weights already fit "
                         f"({original * 4 / 1e6:.1f} MB)")
    return target


def _distilling(settings: CompressSettings) -> bool:
    d = settings.distill
    return d is not None and bool(d.tokens or d.minutes)


def _windows(tokenizer, config) -> tuple[list, dict]:
    """Token windows of the training text and of each held-out evaluation text."""
    window = min(EVAL_WINDOW, config.max_position_embeddings)
    train = tokenizer.encode(training_text())
    held_out = {name: token_windows(tokenizer.encode(text), window, EVAL_TOKENS // window)
                for name, text in evaluation_texts().items()}
    return train, held_out


def compress_model(model: str, out: Path, settings: CompressSettings, force: bool = False,
                   progress: bool = True) -> dict:
    """Compress `model` (anything luodi loads) into the Hugging Face folder `out`; returns compression.json's
    content. An interrupted distillation resumes when run again with the same arguments."""
    from ..loaders import resolve
    from ..loaders.hf_folder import load_reference, save_tokenizer_files
    from ..tokenizer import Tokenizer

    axes = parse_axes(settings.prune)
    claim_output(out, COMPRESSED_MODEL, force)
    began = time.perf_counter()
    stages = Stages(["load model", "plan", "calibrate and prune", "evaluate", "distill", "evaluate", "save"],
                    enabled=progress)
    with stages:
        stages.next()
        source = resolve(model)
        teacher = load_reference(source.hf_dir)
        check_prunable(teacher.config)
        teacher.requires_grad_(False)
        stages.next()
        original = param_count(teacher)
        config = teacher.config.to_dict()
        target = _target_params(settings, original)
        removal = plan_removal(config, axes, target, settings.low_rank) if target is not None else {}
        planned = shape_after(config, removal)
        d = settings.distill
        if _distilling(settings):
            if d.seq > teacher.config.max_position_embeddings:
                raise LuodiError(f"--distill-seq {d.seq} exceeds the model's context "
                                 f"({teacher.config.max_position_embeddings})")
            student_params = params_after(planned, (), 0, settings.low_rank)
            check_memory(distill_bytes(original, planned | {"params": student_params}, d.batch, d.seq), available_bytes())
        tokenizer = Tokenizer(source.hf_dir)
        train_ids, held_out = _windows(tokenizer, teacher.config)
        folder = checkpoint_dir(out)
        key = run_key({"source": source.sha256, **settings.key()})
        run = open_run(folder, key) if _distilling(settings) else None
        stages.next()
        if run is None:
            student, run = _new_student(teacher, removal, settings, train_ids)
            stages.next()
            run["quality"] = {"original": quality_report(teacher, teacher, held_out),
                              "compressed": quality_report(student, teacher, held_out)}
        else:
            student = build_student(run["config"], load_state(folder)["student"], run["low_rank"])
            stages.next()
        stages.next()
        distilled = None
        if _distilling(settings):
            windows = torch.tensor(token_windows(train_ids, d.seq))
            if "total_steps" not in run:
                run["total_steps"] = -(-d.tokens // (d.batch * d.seq)) if d.tokens else timed_steps(
                    student, teacher, windows, d)
                save_run(folder, key, run)
                save_state(folder, {"student": student.state_dict(), "step": 0})
            distilled = distill(student, teacher, windows, d, run["total_steps"], folder, progress)
        stages.next()
        quality = dict(run["quality"])
        if distilled is not None:
            quality["distilled"] = quality_report(student, teacher, held_out)
        stages.next()
        record = _record(source, settings, original, student, run, distilled, quality, axes)
        merge_modules(student)  # factored projections are saved as their products (low_rank.py)
        record["params"]["in_folder"] = param_count(student)
        with output_folder(out, COMPRESSED_MODEL, force) as tmp:
            student.save_pretrained(tmp)
            save_tokenizer_files(source.hf_dir, tmp)
            weights = sorted(Path(tmp).glob("*.safetensors"))
            for path in weights:
                ordinary_permissions(path)
            record["model_bytes"] = sum(path.stat().st_size for path in weights)
            record["seconds"] = round(time.perf_counter() - began, 1)
            write_record(tmp, record)
        if folder.exists():
            discard(folder)
    return record


def _new_student(teacher, removal: dict, settings: CompressSettings, train_ids: list[int]) -> tuple:
    """The pruned (and factored) student and the run record so far: importance measured on the calibration
    windows, `removal` applied to a copy of the teacher's weights, the projections factored."""
    calibration = token_windows(train_ids, CALIBRATION_WINDOW, settings.calib_tokens // CALIBRATION_WINDOW)
    importance = measure_importance(teacher, calibration) if removal else None
    state = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    config = copy.deepcopy(teacher.config.to_dict())
    removed = apply_removal(state, config, importance, removal)
    student = build_student(config, state)
    ranks = planned_ranks(config, settings.low_rank) if settings.low_rank else {}
    factor_modules(student, ranks)
    return student, {"config": config, "removed": removed, "low_rank": ranks,
                     "calibration_tokens": importance.tokens if importance else 0}


def _record(source, settings, original, student, run, distilled, quality, axes) -> dict:
    """compression.json's content (without the output's size and wall time, added once it is written)."""
    after = param_count(student)
    d = settings.distill
    record = {
        "source": {"name": source.name, "kind": source.kind, "sha256": source.sha256, "origin": source.origin},
        "target": {"params": settings.params, "size_budget_mb": settings.size_budget_mb},
        "prune": {"axes": list(axes) if run["removed"] else [], "removed": run["removed"]},
        "params": {"original": original, "compressed": after, "fraction": round(after / original, 4)},
        "calibration": {"text": TRAINING_TEXT, "tokens": run["calibration_tokens"]},
        "evaluation": {"texts": [f"/usr/share/common-licenses/{name}" for name in quality["original"]],
                       "window": EVAL_WINDOW, "max_tokens_per_text": EVAL_TOKENS},
        "quality": quality,
    }
    if run["low_rank"]:
        record["low_rank"] = {"rank": settings.low_rank, "ranks": run["low_rank"]}
    if distilled is not None:
        record["distillation"] = {"text": TRAINING_TEXT, "loss": "KL(teacher || student), every position",
                                  **d.key(), **distilled}
    return record

