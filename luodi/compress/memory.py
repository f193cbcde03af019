"""The memory a distillation run needs, estimated before it starts, against what the machine has free.

Held throughout: the teacher's fp32 weights, and the student's weights, gradients and AdamW's two moments
(4 x 4 bytes per parameter). Per step: both models' logits with their log-softmaxes and the student's
gradients of them (8 [tokens, vocab] fp32 arrays), and what backward keeps per block (about 16
hidden-wide and 4 intermediate-wide fp32 activations per token, plus two [heads, seq, seq] attention
arrays per sequence).
"""

import os

from ..errors import LuodiError

_LOGIT_ARRAYS = 8
_HIDDEN_ACTIVATIONS, _INTERMEDIATE_ACTIVATIONS = 16, 4


def distill_bytes(teacher_params: int, student: dict, batch: int, seq: int) -> int:
    """Estimated peak bytes of distilling a student of config `student` from a teacher of `teacher_params`."""
    tokens = batch * seq
    held = 4 * teacher_params + 16 * student["params"]
    logits = _LOGIT_ARRAYS * tokens * student["vocab_size"] * 4
    per_block = 4 * tokens * (_HIDDEN_ACTIVATIONS * student["hidden_size"]
                              + _INTERMEDIATE_ACTIVATIONS * student["intermediate_size"])
    per_block += 2 * 4 * batch * student["num_attention_heads"] * seq * seq
    return held + logits + student["num_hidden_layers"] * per_block


def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (memory a new workload can take without swapping), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else None
    return pages * os.sysconf("SC_PAGE_SIZE") if pages else None


def check_memory(needed: int, available: int | None) -> None:
    """Refuse, in one line, a run whose estimate exceeds 90% of the available memory."""
    if available is not None and needed > 0.9 * available:
        raise LuodiError(f"distillation needs about {needed / 2**30:.1f} GiB (teacher, student with gradients and "
                         f"AdamW state, one batch's activations); {available / 2**30:.1f} GiB is available: lower "
                         "--distill-batch or --distill-seq")
