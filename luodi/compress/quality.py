"""Quality in torch: perplexity on held-out text, and the KL divergence from a teacher's next-token
distributions (what distillation minimises, measured on text it never trained on)."""

import math

import torch
import torch.nn.functional as F

EVAL_WINDOW = 512  # tokens per window (each a fresh sequence)
EVAL_TOKENS = 2048  # tokens scored per text at most


def kl_to_teacher(student_logits, teacher_logits) -> torch.Tensor:
    """Mean over positions of KL(teacher || student) over the vocabulary (fp32 softmaxes)."""
    teacher = F.log_softmax(teacher_logits.float(), dim=-1)
    student = F.log_softmax(student_logits.float(), dim=-1)
    return F.kl_div(student.flatten(0, -2), teacher.flatten(0, -2), log_target=True, reduction="batchmean")


@torch.no_grad()
def _text_quality(model, teacher, windows: list[list[int]]) -> dict:
    """Perplexity (exp of the mean next-token negative log-likelihood over every window's positions after
    the first) and, unless `model` is the teacher, the mean KL(teacher || model) over every position; one
    forward pass of each model per window."""
    nll, kl, predicted, positions = 0.0, 0.0, 0, 0
    for window in windows:
        ids = torch.tensor([window])
        logits = model(ids, use_cache=False).logits[0]
        nll += F.cross_entropy(logits[:-1].float(), ids[0, 1:], reduction="sum").item()
        predicted += len(window) - 1
        if model is not teacher:
            kl += kl_to_teacher(logits, teacher(ids, use_cache=False).logits[0]).item() * len(window)
            positions += len(window)
    found = {"perplexity": round(math.exp(nll / predicted), 4)}
    return found | ({"kl_to_teacher": round(kl / positions, 5)} if positions else {})


def quality_report(model, teacher, texts: dict[str, list[list[int]]]) -> dict:
    """{text: {perplexity, kl_to_teacher}} of `model` on each held-out text's windows (no KL for the teacher)."""
    return {name: _text_quality(model, teacher, windows) for name, windows in texts.items()}
