"""AWQ (activation-aware weight quantization): per-input-channel scales that protect the weights the
activations lean on, folded into the op before each MatMul so the float model computes exactly the same.

For each group of projections sharing one input X (q/k/v after the input norm; gate/up after the
post-attention norm; down after up, in gated MLPs; o after v when every query head has its own value head),
s = mean|X|^α per channel, α searched on a grid, minimising ||(X/s)·Q(s·W) - X·W||² with Q the quantizer
that will run afterwards (rtn.fake_quantize: the grid MatMulNBits stores). W's input channels are multiplied
by s and the preceding norm's weight (and bias), or projection's rows, divided by s. α = 0 is plain RTN, so
the search never does worse than RTN on its calibration data.

It runs on the canonical decoder before tracing, so the scaled weights reach every target's graph.
"""

import numpy as np
import torch
from torch import nn

from .calibration import prefill_windows, sample_rows
from .rtn import fake_quantize

ALPHAS = tuple(i / 20 for i in range(20))
ROWS = 512  # calibration rows kept per projection input (a fixed-seed sample over all positions)


def _collect_inputs(model, linears: list, token_ids: tuple, rows: int = ROWS) -> dict:
    """{linear module: [rows, in_features] float32 inputs} from running the model on calibration windows."""
    spec = model.spec
    seen = {m: [] for m in linears}
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen[mod].append(
        args[0].detach().reshape(-1, args[0].shape[-1]).float().numpy())) for m in linears]
    try:
        with torch.no_grad():
            empty = torch.zeros(1, spec.num_kv_heads, 0, spec.head_dim, dtype=next(model.parameters()).dtype)
            for feed in prefill_windows(token_ids):
                model(*(torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask", "position_ids")),
                      [(empty, empty) for _ in model.layers])
    finally:
        for hook in hooks:
            hook.remove()
    rng = np.random.default_rng(0)
    return {module: sample_rows(parts, rows, rng) for module, parts in seen.items()}


def _groups(model):
    """(op to divide by s, projections to multiply by s) for every block; the first projection's input is X."""
    spec = model.spec
    for layer in model.layers:
        attn, mlp = layer.attn, layer.mlp
        yield layer.input_norm, [attn.q_proj, attn.k_proj, attn.v_proj]
        yield layer.post_attn_norm, [mlp.gate_proj, mlp.up_proj] if mlp.gated else [mlp.up_proj]
        if mlp.gated:  # down(act(gate) * up): linear in up's output channels
            yield mlp.up_proj, [mlp.down_proj]
        if spec.num_heads == spec.num_kv_heads:  # o reads each value channel once
            yield attn.v_proj, [attn.o_proj]


def search_scales(x: np.ndarray, w: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, float, float, float]:
    """The best per-channel scales for X [rows, K] and W [K, N]: (s, its α, its loss, plain RTN's loss)."""
    reference = x @ w
    magnitude = np.maximum(np.abs(x).mean(axis=0), 1e-8)
    found = []
    for alpha in ALPHAS:
        s = magnitude ** alpha
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
        loss = float(np.mean(((x / s) @ fake_quantize(w * s[:, None], bits, group) - reference) ** 2))
        found.append((loss, alpha, s))
    loss, alpha, s = min(found, key=lambda f: f[0])
    return s, alpha, loss, found[0][0]


def _fold(previous: nn.Module, projections: list, s: torch.Tensor) -> None:
    """Scale the producer's output channels by 1/s and the projections' inputs by s, into new tensors: the
    canonical decoder shares its weights with the transformers model, the export's reference."""
    with torch.no_grad():
        if isinstance(previous, nn.Linear):  # output rows of the producing projection
            previous.weight.data = previous.weight / s[:, None]
        else:  # a norm's per-channel weight
            previous.weight.data = previous.weight / s
        if getattr(previous, "bias", None) is not None:
            previous.bias.data = previous.bias / s
        for projection in projections:
            projection.weight.data = projection.weight * s[None, :]


def apply_awq(model, token_ids: tuple, bits: int, group: int) -> dict:
    """Search and fold AWQ scales into the canonical decoder in place; returns what the manifest records."""
    groups = list(_groups(model))
    inputs = _collect_inputs(model, [projections[0] for _, projections in groups], token_ids)
    alphas, gains = [], []
    for previous, projections in groups:
        x = inputs[projections[0]]
        w = torch.cat([p.weight for p in projections]).detach().float().numpy().T
        s, alpha, loss, rtn_loss = search_scales(x, w, bits, group)
        _fold(previous, projections, torch.from_numpy(s).to(projections[0].weight.dtype))
        alphas.append(alpha)
        gains.append(loss / rtn_loss if rtn_loss else 1.0)
    return {"groups": len(gains), "alpha_median": float(np.median(alphas)),
            "loss_vs_rtn_median": round(float(np.median(gains)), 4), "loss_vs_rtn_max": round(max(gains), 4),
            "calibration_tokens": len(token_ids)}
