"""Weight-only INT4/INT8 in standard ops: each constant MatMul weight becomes a blocked DequantizeLinear.

W [K, N] is stored as int4 (or int8) values with one scale per block of 32 along K (the input dimension) and
per output column, symmetric: zero point 0, as TensorRT's weight-only kernels require (its parser fuses
DequantizeLinear + MatMul); the scale has the graph's float type, so an fp16 graph stays fp16. Opset 21+
(blocked DequantizeLinear, int4). ONNX Runtime runs the same graph (the CPU stand-in of the parity check).
A tied embedding keeps its float table for the token lookup.
"""

import ml_dtypes
import numpy as np
import onnx_ir as ir

from ..contract.quantization import DEFAULT_GROUP_SIZE
from ..passes.base import LuodiPass, constant_matmul_weight

BLOCK = DEFAULT_GROUP_SIZE


def quantize_blocked(w: np.ndarray, bits: int, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(values [K, N] as int4/int8, scales [K/block, N] in w's dtype): symmetric round-to-nearest per block."""
    k, n = w.shape
    blocks = w.astype(np.float32).reshape(k // block, block, n)
    top = (1 << (bits - 1)) - 1
    scale = np.abs(blocks).max(axis=1) / top
    scale = np.where(scale == 0, 1.0, scale).astype(w.dtype)
    q = np.clip(np.rint(blocks / scale.astype(np.float32)[:, None, :]), -top, top).reshape(k, n)
    return q.astype(ml_dtypes.int4 if bits == 4 else np.int8), scale


class _BlockedDequantize(LuodiPass):
    bits = 0

    def apply(self, model: ir.Model) -> int:
        graph, count = model.graph, 0
        for node in list(graph):
            weight = constant_matmul_weight(node)
            if weight is None or weight.shape[0] % BLOCK:
                continue
            q, scale = quantize_blocked(weight.const_value.numpy(), self.bits)
            values = []
            for suffix, array in ((f"int{self.bits}", q), ("scale", scale)):
                name = f"{weight.name}.{suffix}"
                values.append(ir.Value(name=name, const_value=ir.tensor(array, name=name)))
                graph.register_initializer(values[-1])
            dq = ir.node("DequantizeLinear", values, {"axis": 0, "block_size": BLOCK}, name=f"{node.name}/weights")
            dq.outputs[0].shape, dq.outputs[0].type = weight.shape, weight.type
            graph.insert_before(node, dq)
            node.replace_input_with(1, dq.outputs[0])
            if not weight.uses():
                graph.initializers.pop(weight.name)
            count += 1
        return count


class WeightsInt4(_BlockedDequantize):
    name = "weights_int4"
    description = "MatMul weights as int4 blocked DequantizeLinear (symmetric, block 32; TensorRT weight-only)"
    bits = 4


class WeightsInt8(_BlockedDequantize):
    name = "weights_int8"
    description = "MatMul weights as int8 blocked DequantizeLinear (symmetric, block 32; TensorRT weight-only)"
    bits = 8
