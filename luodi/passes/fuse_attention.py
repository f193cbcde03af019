"""Attention -> the standard opset-23 Attention op, with the KV-cache concatenation inside it.

Matches what the canonical decoder traces: present = Concat(past, new) for keys and values, the keys and
values repeated to the query heads (grouped-query models) or used as they are, softmax(mask ? q.k^T * scale
: min) @ v. The mask becomes an additive float bias (0 or the dtype's minimum, as the traced graph used),
so rows with no visible key stay finite. Soft-capped scores (Gemma 2: tanh(scores / c) * c before the mask)
become the op's softcap attribute, which the ONNX spec applies before the mask too. The model's
default-domain opset is raised to 23.
"""

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from .base import FUSED_OPS_OPSET, RewritePass, scalar


class _Attention(pattern.RewriteRuleClassBase):
    def __init__(self, grouped: bool, capped: bool):
        super().__init__("Attention" + ("Grouped" if grouped else "") + ("Softcap" if capped else ""))
        self.grouped, self.capped = grouped, capped

    def _repeat(self, op, x, axes, shape, target):
        if not self.grouped:
            return x
        return op.Reshape(op.Expand(op.Unsqueeze(x, axes), shape), target, _allow_other_attributes=True)

    def pattern(self, op, q, past_k, k, past_v, v, mask, scale, fill, k_axes, k_shape, k_target, v_axes, v_shape,
                v_target, cap, cap_out):
        present_k = op.Concat(past_k, k, axis=2)
        present_v = op.Concat(past_v, v, axis=2)
        keys = self._repeat(op, present_k, k_axes, k_shape, k_target)
        values = self._repeat(op, present_v, v_axes, v_shape, v_target)
        scores = op.Mul(op.MatMul(q, op.Transpose(keys, perm=[0, 1, 3, 2])), scale)
        if self.capped:  # Gemma 2: tanh(scores / cap) * cap, before the mask
            scores = op.Mul(op.Tanh(op.Div(scores, cap)), cap_out)
        probs = op.Softmax(op.Where(mask, scores, fill), axis=-1)
        return op.MatMul(probs, values), present_k, present_v

    def check(self, context, q, past_k, mask, scale, fill, cap=None, cap_out=None, **_):
        result = pattern.MatchResult()
        if not isinstance(scalar(scale), float) or not isinstance(scalar(fill), float):
            return result.fail("scale or fill value is not a constant")
        if self.capped and (not isinstance(scalar(cap), float) or scalar(cap) <= 0 or scalar(cap) != scalar(cap_out)):
            return result.fail("soft-cap is not one positive constant")
        if scalar(fill) > -1e30:
            return result.fail("masked scores are not set to the dtype's minimum")
        if q.shape is None or len(q.shape) != 4 or past_k.shape is None or len(past_k.shape) != 4:
            return result.fail("query or cache is not [batch, heads, sequence, head_dim]")
        if mask.dtype != ir.DataType.BOOL:
            return result.fail("mask is not boolean")
        return result

    def rewrite(self, op, q, past_k, k, past_v, v, mask, scale, fill, cap=None, **_):
        zero = op.Constant(value=ir.tensor(np.array(0.0, dtype=np.float32)))
        bias = op.Where(mask, zero, fill)
        extra = {"softcap": scalar(cap)} if self.capped else {}
        out, present_k, present_v = op.Attention(q, k, v, bias, past_k, past_v, scale=scalar(scale), _outputs=3,
                                                 **extra)
        return out, present_k, present_v


class FuseAttention(RewritePass):
    name = "fuse_attention"
    description = "scaled dot-product attention with KV concat -> opset-23 Attention"
    min_opset = FUSED_OPS_OPSET

    def rules(self):
        return [_Attention.rule(grouped=g, capped=c) for g in (True, False) for c in (True, False)]
