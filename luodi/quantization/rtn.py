"""Round-to-nearest blockwise quantization, simulated in float: the grid MatMulNBits stores (asymmetric,
integer zero point, each block's range widened to include 0), for measuring and searching before quantizing."""

import numpy as np


def fake_quantize(w: np.ndarray, bits: int, group: int) -> np.ndarray:
    """w [K, N] quantized and dequantized in blocks of `group` along K (the MatMul's input dimension)."""
    k, n = w.shape
    blocks = w.reshape(k // group, group, n)
    top = (1 << bits) - 1
    lo = np.minimum(blocks.min(axis=1, keepdims=True), 0)
    hi = np.maximum(blocks.max(axis=1, keepdims=True), 0)
    scale = np.where(hi > lo, (hi - lo) / top, 1.0)
    zero = np.clip(np.round(-lo / scale), 0, top)
    q = np.clip(np.round(blocks / scale) + zero, 0, top)
    return ((q - zero) * scale).reshape(k, n).astype(np.float32)
