"""Mixed INT4/INT8 precision under a size budget, from each MatMul's measured sensitivity.

Two measurements per MatMul, each with only its weight quantized (Q = blockwise asymmetric RTN, the grid
MatMulNBits stores): the relative error of its own output on calibration activations,
||X (W - Q(W))||² / ||X W||², at 4 and at 8 bits; and the model's loss of fidelity at 4 bits, the mean KL
divergence of the next-token distribution from the float model's on calibration text (a MatMul's own error
says little about what it does to the logits: the LM head's is small and matters most). Moving a MatMul to
INT8 removes the fraction 1 - err8/err4 of its divergence. Starting from everything at INT4, the MatMuls
removing the most divergence per added byte move first while the model's files stay within the budget. The
plan and every MatMul's measurements are recorded in the manifest.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import LuodiError
from .rtn import fake_quantize

def nbits_bytes(k: int, n: int, bits: int, group: int, offsets: bool = False) -> int:
    """Bytes MatMulNBits stores for a [K, N] weight: packed values, fp16 scales (half_scales.py), and packed
    zero points, or with `offsets` the fp16 block offsets of a lowered float-zero-point weight instead
    (float_zero_points.py: its zero points are the default centre, not stored)."""
    blocks = k // group
    zero_points = 0 if offsets else n * -(-blocks * bits // 8)
    return n * blocks * group * bits // 8 + n * blocks * 2 * (1 + offsets) + zero_points


@dataclass
class MatMulSensitivity:
    """One MatMul's weight shape and its output error at 4 and 8 bits."""

    name: str
    k: int
    n: int
    error_int4: float
    error_int8: float
    divergence_int4: float | None = None  # KL of the logits with only this MatMul at 4 bits

    @property
    def harm(self) -> float:
        """What INT4 here costs the model: the KL divergence when measured, else the output error."""
        return self.error_int4 if self.divergence_int4 is None else self.divergence_int4

    def harm_removed_by_int8(self) -> float:
        return self.harm * (1 - self.error_int8 / self.error_int4) if self.error_int4 else 0.0


def measure(weights: dict[str, np.ndarray], activations: dict[str, np.ndarray], group: int,
            grid4=fake_quantize) -> list[MatMulSensitivity]:
    """Each MatMul's relative output error on its calibration activations at 4 bits (on `grid4`, the int4
    method's grid) and at 8 bits (RTN, what the int8 MatMuls get)."""
    found = []
    for name, w in weights.items():
        x = activations[name]
        reference = x @ w
        norm = float(np.sum(reference.astype(np.float64) ** 2)) or 1.0
        errors = [float(np.sum((x @ (w - grid(w, bits, group))).astype(np.float64) ** 2)) / norm
                  for grid, bits in ((grid4, 4), (fake_quantize, 8))]
        found.append(MatMulSensitivity(name, *w.shape, *errors))
    return found


def plan(sensitivities: list[MatMulSensitivity], other_bytes: int, budget_bytes: int, group: int,
         shared: dict | None = None, offsets4: bool = False) -> dict:
    """Which MatMuls go to INT8 so the model fits `budget_bytes` with the least summed harm; the rest INT4.

    `other_bytes` is everything the budget holds besides the MatMul weights (embedding table, norms, graph);
    `shared` maps a MatMul to the bytes it saves at either width (an LM head whose quantized weight replaces
    the int8 embedding table, see shared_embedding.py); `offsets4`: the int4 MatMuls store block offsets
    (minmax)."""
    size = {s.name: {4: nbits_bytes(s.k, s.n, 4, group, offsets4), 8: nbits_bytes(s.k, s.n, 8, group)}
            for s in sensitivities}
    for name, saved in (shared or {}).items():
        size[name][4] -= saved
        size[name][8] -= saved
    total = other_bytes + sum(v[4] for v in size.values())
    if total > budget_bytes:
        raise LuodiError(f"a size budget of {budget_bytes / 1e6:.3f} MB cannot be met: everything at int4 is "
                         f"{total / 1e6:.3f} MB")
    gain = sorted(sensitivities, key=lambda s: s.harm_removed_by_int8() / (size[s.name][8] - size[s.name][4]),
                  reverse=True)
    int8 = []
    for s in gain:
        extra = size[s.name][8] - size[s.name][4]
        if s.harm_removed_by_int8() > 0 and total + extra <= budget_bytes:  # minmax can beat int8 RTN on a grid
            int8.append(s.name)
            total += extra
    chosen = set(int8)
    return {"budget_mb": round(budget_bytes / 1e6, 4), "planned_mb": round(total / 1e6, 4), "int8": int8,
            "harm_int4": _digits(sum(s.harm for s in sensitivities)),
            "harm_planned": _digits(sum(s.harm - (s.harm_removed_by_int8() if s.name in chosen else 0)
                                        for s in sensitivities)),
            "sensitivity": {s.name: {"error_int4": _digits(s.error_int4), "error_int8": _digits(s.error_int8),
                                     "kl_int4": None if s.divergence_int4 is None else _digits(s.divergence_int4)}
                            for s in sensitivities}}


def _digits(x: float) -> float:
    return float(f"{x:.4g}")
