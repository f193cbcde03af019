"""luodi tune's choice: each candidate's quality loss against the fp32 reference, its speed score, and the
fastest candidate within the quality budget, with a verdict for every candidate saying why it was or was not
chosen.

Speed: chat = median decode tokens/s on the chat workload (higher is better), long-prompt = median TTFT on
the long prompt (lower is better). The score is each metric relative to the best candidate's on it (1 = the
best), the geometric mean of the two when both are measured, so no unit dominates.
"""

import math

from ..errors import LuodiError

METRICS = {"chat": ("chat_decode_tokens_per_s", "higher"), "long-prompt": ("long_prompt_ttft_ms", "lower")}


def quality_loss_pct(perplexity: float, reference: float) -> float:
    """Perplexity increase over the reference, in percent (negative: lower perplexity than fp32)."""
    return (perplexity / reference - 1.0) * 100.0


def row(candidate, status: str | None, perplexity: float | None, reference: float | None,
        speed: dict | None) -> dict:
    """One report row: the candidate's settings, numbers (None where not measured) and its status."""
    b = candidate.build
    q = dict(b.quantization)
    measured = status is None
    return {"id": candidate.id, "build": b.name, "configuration": b.describe(), "target": b.target,
            "precision": b.precision, "method": q.get("method"), "keep": list(q.get("keep", [])) or None,
            "inference_precision": candidate.inference_precision, "threads": candidate.threads,
            "speculation": candidate.draft.name if candidate.draft else None,
            "perplexity": perplexity if measured else None,
            "quality_loss_pct": quality_loss_pct(perplexity, reference) if measured else None,
            "chat_decode_tokens_per_s": speed["chat"]["decode_tokens_per_s"] if measured and "chat" in speed else None,
            "long_prompt_ttft_ms": speed["long-prompt"]["ttft_s"] * 1e3 if measured and "long-prompt" in speed else None,
            "score": None, "status": status or "measured", "verdict": status}


def score(rows: list[dict], kinds) -> None:
    """Set each measured row's speed score (see the module docstring)."""
    measured = [r for r in rows if r["status"] == "measured"]
    for kind in kinds:
        key, better = METRICS[kind]
        values = [r[key] for r in measured if r[key] and r[key] > 0]
        if not values:
            continue
        best = max(values) if better == "higher" else min(values)
        for r in measured:
            ratio = (r[key] / best if better == "higher" else best / r[key]) if r[key] and r[key] > 0 else 0.0
            r.setdefault("_ratios", []).append(ratio)
    for r in measured:
        ratios = r.pop("_ratios", [])
        r["score"] = math.prod(ratios) ** (1 / len(ratios)) if ratios and min(ratios) > 0 else 0.0


def choose(rows: list[dict], budget_pct: float) -> dict | None:
    """The fastest measured row within the quality budget (ties: the smaller loss), every row's verdict set;
    None when no measured row is within it."""
    measured = [r for r in rows if r["status"] == "measured"]
    within = [r for r in measured if r["quality_loss_pct"] <= budget_pct]
    chosen = max(within, key=lambda r: (r["score"], -r["quality_loss_pct"]), default=None)
    for r in measured:
        if r is chosen:
            r["verdict"] = f"chosen: the fastest within {budget_pct:g}% (score {r['score']:.3f})"
        elif r["quality_loss_pct"] > budget_pct:
            r["verdict"] = f"over the quality budget: {r['quality_loss_pct']:+.2f}% > {budget_pct:g}%"
        else:
            r["verdict"] = f"within the budget but slower: score {r['score']:.3f} < {chosen['score']:.3f}"
    return chosen


def no_choice_error(rows: list[dict], budget_pct: float) -> LuodiError:
    """The one-line error when nothing measured is within the budget: it names the closest candidate."""
    measured = [r for r in rows if r["status"] == "measured"]
    if not measured:
        return LuodiError("no candidate was measured (the time budget ran out first, or every one failed); "
                          "rerun with a larger --budget-minutes: finished steps are kept")
    best = min(measured, key=lambda r: r["quality_loss_pct"])
    return LuodiError(f"no candidate is within {budget_pct:g}% of fp32 perplexity; the closest is {best['id']} "
                      f"({best['quality_loss_pct']:+.2f}%)")
