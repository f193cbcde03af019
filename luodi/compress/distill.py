"""Distillation: the pruned student learns the original model's next-token distributions (the teacher's),
by AdamW on the KL divergence KL(teacher || student) at every position of windows of the training text.

The batch of each step is a function of the seed and the step alone (an epoch-wise permutation of the
windows), the learning rate follows a fixed warmup + cosine schedule over the planned steps, and the
state saved at a checkpoint is the student's weights, AdamW's state and the step: a run resumed from a
checkpoint ends exactly where an uninterrupted one does. Checkpoints are written every few minutes and
when Ctrl-C stops the run (after the step under way). A time budget (--distill-minutes) is turned into
a step count once, from one timed step before training, and kept in the checkpoint.
"""

import contextlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..progress import token_bar
from .checkpoint import load_state, save_state
from .quality import kl_to_teacher

WARMUP_STEPS = 10
FINAL_LR_SHARE = 0.1  # the cosine ends at this share of the peak learning rate


@dataclass(frozen=True)
class DistillSettings:
    """What a distillation run does; all of it is part of the run's key except the checkpoint interval."""

    tokens: int | None  # tokens to train on (batch x seq per step)
    minutes: float | None  # or a time budget
    batch: int = 4
    seq: int = 256
    lr: float = 1e-4
    seed: int = 0
    autocast: str = "bf16"  # "bf16" (where the CPU has bf16 instructions) or "fp32"
    checkpoint_seconds: float = 300.0

    def key(self) -> dict:
        """The settings that change the result."""
        return {k: v for k, v in asdict(self).items() if k != "checkpoint_seconds"}


def bf16_supported() -> bool:
    """Whether this CPU runs bf16 matrix products natively (oneDNN: AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _batch(windows: torch.Tensor, step: int, batch: int, seed: int) -> torch.Tensor:
    """The windows of `step`: positions step*batch.. of an endless sequence of seeded per-epoch permutations."""
    n, rows = len(windows), []
    for j in range(step * batch, (step + 1) * batch):
        epoch, index = divmod(j, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        rows.append(windows[order[index]])
    return torch.stack(rows)


def _lr_share(step: int, total: int) -> float:
    warmup = min(WARMUP_STEPS, max(1, total // 10))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return FINAL_LR_SHARE + (1 - FINAL_LR_SHARE) * 0.5 * (1 + math.cos(math.pi * progress))


def _loss(student, teacher, ids, settings: DistillSettings):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.autocast == "bf16"):
        with torch.no_grad():
            target = teacher(ids, use_cache=False).logits
        return kl_to_teacher(student(ids, use_cache=False).logits, target)


@contextlib.contextmanager
def _interrupt_after_step():
    """Ctrl-C (SIGINT) during training sets a flag the loop reads after each step, so the step finishes and
    is checkpointed before the run stops; a second Ctrl-C stops at once. Only the main thread gets signals."""
    asked = []
    if threading.current_thread() is not threading.main_thread():
        yield asked
        return

    def ask(signum, frame):
        asked.append(signum)
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield asked
    finally:
        signal.signal(signal.SIGINT, previous)


def timed_steps(student, teacher, windows, settings: DistillSettings) -> int:
    """The step count a --distill-minutes budget allows: one forward and backward timed (gradients dropped,
    the student unchanged), at least one step."""
    start = time.perf_counter()
    _loss(student, teacher, _batch(windows, 0, settings.batch, settings.seed), settings).backward()
    student.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    return max(1, int(settings.minutes * 60 / seconds))


def distill(student, teacher, windows: torch.Tensor, settings: DistillSettings, total_steps: int,
            folder: Path, progress: bool = True) -> dict:
    """Train `student` toward `teacher` for `total_steps` steps, checkpointing into `folder` every
    settings.checkpoint_seconds (and resuming from its state.pt if there is one); what the run did."""
    optimizer = torch.optim.AdamW(student.parameters(), lr=settings.lr, weight_decay=0.0)
    start_step = 0
    if (folder / "state.pt").is_file():
        state = load_state(folder)
        student.load_state_dict(state["student"])
        if state["step"] > 0:
            optimizer.load_state_dict(state["optimizer"])
        start_step = state["step"]
    tokens_per_step = settings.batch * settings.seq
    student.train()
    losses, last_save, began = [], time.monotonic(), time.perf_counter()
    bar = token_bar(total_steps * tokens_per_step, "distilling", start_step * tokens_per_step, progress)
    with bar, _interrupt_after_step() as interrupted:
        for step in range(start_step, total_steps):
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * _lr_share(step, total_steps)
            loss = _loss(student, teacher, _batch(windows, step, settings.batch, settings.seed), settings)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update(tokens_per_step)
            bar.set_postfix(kl=f"{losses[-1]:.4f}")
            due = time.monotonic() - last_save >= settings.checkpoint_seconds
            if (due or interrupted) and step + 1 < total_steps:
                save_state(folder, {"student": student.state_dict(), "optimizer": optimizer.state_dict(),
                                    "step": step + 1})
                last_save = time.monotonic()
            if interrupted and step + 1 < total_steps:
                raise KeyboardInterrupt
    student.eval()
    return {"steps": total_steps, "tokens": total_steps * tokens_per_step, "resumed_at_step": start_step,
            "seconds_this_run": round(time.perf_counter() - began, 1),
            "train_kl_first": round(losses[0], 5) if losses else None,
            "train_kl_last": round(losses[-1], 5) if losses else None}
