"""luodi tune's chart: speed against quality loss, one point per measured configuration, the chosen one marked
and the quality budget drawn as a vertical line; one panel per measured workload (W1 decode, W2 TTFT)."""

from pathlib import Path

from ..plotting import pyplot, save_png
from .choose import METRICS

_LABELS = {"chat": "chat: decode tokens/s (higher is better)", "long-prompt": "long prompt: TTFT ms (lower is better)"}


def plot_tune(report: dict, path: Path) -> Path:
    """Write the tune chart of `report` (report.json's content) to path."""
    plt = pyplot()
    kinds = list(report["protocol"]["workloads"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 5), squeeze=False)
    rows = [r for r in report["candidates"] if r["status"] == "measured"]
    for ax, kind in zip(axes[0], kinds):
        key = METRICS[kind][0]
        points = [r for r in rows if r[key] is not None]
        for target, marker in (("ort", "o"), ("openvino", "s"), ("trt", "^")):
            mine = [r for r in points if r["target"] == target]
            if mine:
                ax.scatter([r["quality_loss_pct"] for r in mine], [r[key] for r in mine], marker=marker, label=target,
                           alpha=0.8)
        others = [r for r in points if r["target"] not in ("ort", "openvino", "trt")]
        if others:
            ax.scatter([r["quality_loss_pct"] for r in others], [r[key] for r in others], marker="D", label="other")
        for r in points:
            ax.annotate(f"{r['build']}{' +spec' if r['speculation'] else ''}"
                        f"{' ' + r['inference_precision'] if r['inference_precision'] not in (None, 'f32') else ''}"
                        f" {r['threads']}t", (r["quality_loss_pct"], r[key]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        chosen = [r for r in points if r["id"] == report["chosen"]]
        if chosen:
            ax.scatter([chosen[0]["quality_loss_pct"]], [chosen[0][key]], s=260, marker="*", color="red", zorder=5,
                       label="chosen")
        ax.axvline(report["budget_pct"], color="red", ls="--", lw=1, label=f"budget {report['budget_pct']:g}%")
        ax.set_xlabel("quality loss: perplexity vs fp32 (%)")
        ax.set_ylabel(_LABELS[kind])
        ax.set_title(_LABELS[kind].split(" (")[0])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    threads = sorted({r["threads"] for r in report["candidates"]})
    fig.suptitle(f"luodi tune {report['model']}: {', '.join(sorted({r['target'] for r in report['candidates']}))}; "
                 f"threads {', '.join(map(str, threads))}")
    fig.tight_layout()
    return save_png(fig, path)
