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
def perplexity(model, windows: list[list[int]]) -> float:
    """exp(mean next-token negative log-likelihood) over every window's positions after the first."""
    nll, count = 0.0, 0
    for window in windows:
        ids = torch.tensor([window])
        logits = model(ids, use_cache=False).logits[0, :-1].float()
        nll += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += len(window) - 1
    return math.exp(nll / count)


@torch.no_grad()
def mean_kl(student, teacher, windows: list[list[int]]) -> float:
    """KL(teacher || student) averaged over every position of the windows."""
    total, count = 0.0, 0
    for window in windows:
        ids = torch.tensor([window])
        kl = kl_to_teacher(student(ids, use_cache=False).logits[0], teacher(ids, use_cache=False).logits[0])
        total += kl.item() * len(window)
        count += len(window)
    return total / count


def quality_report(model, teacher, texts: dict[str, list[list[int]]]) -> dict:
    """{text: {perplexity, kl_to_teacher}} of `model` on each held-out text's windows (no KL for the teacher)."""
    report = {}
    for name, windows in texts.items():
        report[name] = {"perplexity": round(perplexity(model, windows), 4)}
        if model is not teacher:
            report[name]["kl_to_teacher"] = round(mean_kl(model, teacher, windows), 5)
    return report
