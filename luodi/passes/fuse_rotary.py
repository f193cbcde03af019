"""Rotary embedding -> the standard opset-23 RotaryEmbedding op.

Matches the rotate-half form the canonical decoder traces on a [batch, heads, sequence, head_dim] tensor:
x * cos + concat(-x[..., half:], x[..., :half]) * sin, where cos = unsqueeze(concat(c, c), 1) is built from
its half c [batch, sequence, head_dim / 2] (likewise sin): the op takes those halves directly. With
partial rotary (Phi-3 style) only the rotated slice is fused; the slice/concat around it stays (ONNX
Runtime 1.32 rejects RotaryEmbedding's rotary_embedding_dim on 4-D input), so attention_3d skips it.
"""

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from .base import FUSED_OPS_OPSET, RewritePass, scalar


def _int(value) -> int | None:
    got = scalar(value)
    return int(got) if isinstance(got, (int, np.integer)) else None


def _half_table(table: ir.Value) -> ir.Value | None:
    """c when table = Unsqueeze(Concat(c, c, axis=-1), [1]) (the form the canonical decoder traces), else None."""
    unsqueeze = table.producer()
    if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or _int(unsqueeze.inputs[1]) != 1:
        return None
    concat = unsqueeze.inputs[0].producer()
    if concat is None or concat.op_type != "Concat" or len(concat.inputs) != 2:
        return None
    first, second = concat.inputs
    return first if first is second and concat.attributes.get_int("axis", 0) in (-1, 2) else None


class _Rotary(pattern.RewriteRuleClassBase):
    # cos and sin stay outside the pattern: they are shared by every layer's q and k
    def pattern(self, op, x, cos, sin, zero, half, end, axis1, axis2, step1, step2):
        first = op.Slice(x, zero, half, axis1, step1)
        second = op.Slice(x, half, end, axis2, step2)
        rotated = op.Concat(op.Neg(second), first, axis=-1)
        return op.Add(op.Mul(x, cos), op.Mul(rotated, sin))

    def check(self, context, x, cos, sin, zero, half, end, axis1, axis2, step1, step2, **_):
        result = pattern.MatchResult()
        if x.shape is None or len(x.shape) != 4 or not isinstance(x.shape[-1], int):
            return result.fail("input is not [batch, heads, sequence, head_dim] with a known head_dim")
        dim = x.shape[-1]
        if _int(zero) != 0 or _int(half) != dim // 2 or (_int(end) or 0) < dim:
            return result.fail("slices are not the two halves of the head dimension")
        if {_int(axis1), _int(axis2)} - {-1, 3} or _int(step1) != 1 or _int(step2) != 1:
            return result.fail("slices are not along the last axis")
        for table in (cos, sin):
            c = _half_table(table)
            if c is None or c.shape is None or len(c.shape) != 3 or c.shape[-1] != dim // 2:
                return result.fail("cos/sin are not two copies of a [batch, sequence, head_dim / 2] half")
        return result

    def rewrite(self, op, x, cos, sin, **_):
        return op.RotaryEmbedding(x, _half_table(cos), _half_table(sin), interleaved=0)


class FuseRotary(RewritePass):
    name = "fuse_rotary"
    description = "rotate-half rotary embedding -> opset-23 RotaryEmbedding"
    min_opset = FUSED_OPS_OPSET

    def rules(self):
        return [_Rotary.rule()]
