"""Attention in its 3-D form: drop the per-head Reshape/Transpose around the fused attention.

After fuse_rotary and fuse_attention, each layer still splits Q/K/V into heads ([batch, seq, hidden] ->
[batch, heads, seq, head_dim]) and merges the result back. The opset-23 Attention and RotaryEmbedding ops
take [batch, seq, hidden] directly given their head counts, so this pass feeds them the projections as
they are and uses Attention's 3-D output in place of the merge: eight fewer nodes per layer. A per-head
QK-norm between the split and the rotary embedding (Qwen3, Gemma 3) stays, on a [batch, seq, heads, head_dim]
view of the projection (Reshape is a view in ONNX Runtime).
"""

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from .base import FUSED_OPS_OPSET, RewritePass

_HEADS = [0, 2, 1, 3]


def _split_heads(op, x, shape, norm_weight=None, norm_name=None):
    """x [batch, seq, heads * head_dim] -> [batch, heads, seq, head_dim], through the per-head QK-norm
    (SimplifiedLayerNormalization over head_dim: Qwen3, Gemma 3) when `norm_weight` is given."""
    heads = op.Reshape(x, shape, _allow_other_attributes=True)
    if norm_weight is not None:
        heads = op.SimplifiedLayerNormalization(heads, norm_weight, _allow_other_attributes=True,
                                                _outputs=[norm_name])
    return op.Transpose(heads, perm=_HEADS)


def _normed_3d(op, x, shape, weight, norm: ir.Value):
    """The per-head norm of a 3-D projection, kept 3-D: [b, s, h*d] -> [b, s, h, d] -> norm -> [b, s, h*d]."""
    attrs = norm.producer().attributes
    normed = op.SimplifiedLayerNormalization(op.Reshape(x, shape), weight, axis=attrs.get_int("axis", -1),
                                             epsilon=attrs.get_float("epsilon", 1e-5),
                                             stash_type=attrs.get_int("stash_type", 1))
    return op.Reshape(normed, op.Constant(value=ir.tensor(np.array([0, 0, -1], dtype=np.int64))))


class _Attention3d(pattern.RewriteRuleClassBase):
    def __init__(self, rotary: bool, qk_norm: bool):
        super().__init__("Attention3d" + ("Rotary" if rotary else "") + ("QkNorm" if qk_norm else ""))
        self.rotary, self.qk_norm = rotary, qk_norm

    def pattern(self, op, q, k, v, q_shape, k_shape, v_shape, cos, sin, bias, past_k, past_v, out_shape, q_weight,
                k_weight):
        norms = [(q_weight, "q_norm"), (k_weight, "k_norm")] if self.qk_norm else [(None, None)] * 2
        q4, k4 = _split_heads(op, q, q_shape, *norms[0]), _split_heads(op, k, k_shape, *norms[1])
        if self.rotary:
            q4 = op.RotaryEmbedding(q4, cos, sin, _allow_other_attributes=True, _outputs=["q_rot"])
            k4 = op.RotaryEmbedding(k4, cos, sin, _allow_other_attributes=True, _outputs=["k_rot"])
        y4, present_k, present_v = op.Attention(q4, k4, _split_heads(op, v, v_shape), bias, past_k, past_v,
                                                _allow_other_attributes=True, _outputs=["y4", "pk", "pv"])
        return op.Reshape(op.Transpose(y4, perm=_HEADS), out_shape, _allow_other_attributes=True), present_k, \
            present_v

    def check(self, context, past_k, y4, **_):
        result = pattern.MatchResult()
        if past_k.shape is None or not isinstance(past_k.shape[1], int) or y4.shape is None:
            return result.fail("head counts are not known")
        if not isinstance(y4.shape[1], int):
            return result.fail("query head count is not known")
        return result

    def rewrite(self, op, q, k, v, q_shape, k_shape, cos, sin, bias, past_k, past_v, y4, q_weight=None,
                k_weight=None, q_norm=None, k_norm=None, **_):
        heads, kv_heads = y4.shape[1], past_k.shape[1]
        if self.qk_norm:
            q, k = _normed_3d(op, q, q_shape, q_weight, q_norm), _normed_3d(op, k, k_shape, k_weight, k_norm)
        if self.rotary:
            q = op.RotaryEmbedding(q, cos, sin, interleaved=0, num_heads=heads)
            k = op.RotaryEmbedding(k, cos, sin, interleaved=0, num_heads=kv_heads)
        attrs = y4.producer().attributes
        extra = {name: attrs.get_float(name) for name in ("scale", "softcap") if name in attrs}
        return op.Attention(q, k, v, bias, past_k, past_v, q_num_heads=heads, kv_num_heads=kv_heads, _outputs=3,
                            **extra)


class Attention3d(RewritePass):
    name = "attention_3d"
    description = "fused Attention/RotaryEmbedding on [batch, seq, hidden]: no per-head Reshape/Transpose"
    min_opset = FUSED_OPS_OPSET

    def rules(self):
        return [_Attention3d.rule(rotary=r, qk_norm=n) for r in (True, False) for n in (True, False)]
