"""Round-to-nearest blockwise quantization, simulated in float: the grid MatMulNBits stores (asymmetric,
integer zero point, each block's range widened to include 0), for measuring and searching before quantizing,
and the minmax grid (each block's own range, float zero point) that float_zero_points.py lowers."""

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


def fake_quantize_minmax(w: np.ndarray, bits: int, group: int) -> np.ndarray:
    """w [K, N] on the minmax grid in blocks of `group` along K: the levels run from each block's minimum to its
    maximum, as onnxruntime's HQQ quantizer computes them without its search (unrounded float zero point)."""
    k, n = w.shape
    blocks = w.reshape(k // group, group, n).astype(np.float32)
    top = (1 << bits) - 1
    lo, hi = blocks.min(axis=1, keepdims=True), blocks.max(axis=1, keepdims=True)
    inverse = np.minimum(top / np.where(hi > lo, hi - lo, top), np.float32(2e4)).astype(np.float32)
    zero = -lo * inverse
    q = np.clip(np.round(blocks * inverse + zero), 0, top)
    return ((q - zero) / inverse).reshape(k, n).astype(np.float32)
