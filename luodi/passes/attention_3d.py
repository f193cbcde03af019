"""Attention in its 3-D form: drop the per-head Reshape/Transpose around the fused attention.

After fuse_rotary and fuse_attention, each layer still splits Q/K/V into heads ([batch, seq, hidden] ->
[batch, heads, seq, head_dim]) and merges the result back. The opset-23 Attention and RotaryEmbedding ops
take [batch, seq, hidden] directly given their head counts, so this pass feeds them the projections as
they are and uses Attention's 3-D output in place of the merge: eight fewer nodes per layer.
"""

from onnxscript.rewriter import pattern

from .base import FUSED_OPS_OPSET, RewritePass

_HEADS = [0, 2, 1, 3]


def _split_heads(op, x, shape):
    return op.Transpose(op.Reshape(x, shape, _allow_other_attributes=True), perm=_HEADS)


class _Attention3d(pattern.RewriteRuleClassBase):
    def __init__(self, rotary: bool):
        super().__init__("Attention3d" + ("Rotary" if rotary else ""))
        self.rotary = rotary

    def pattern(self, op, q, k, v, q_shape, k_shape, v_shape, cos, sin, bias, past_k, past_v, out_shape):
        q4, k4 = _split_heads(op, q, q_shape), _split_heads(op, k, k_shape)
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

    def rewrite(self, op, q, k, v, cos, sin, bias, past_k, past_v, y4, **_):
        heads, kv_heads = y4.shape[1], past_k.shape[1]
        if self.rotary:
            q = op.RotaryEmbedding(q, cos, sin, interleaved=0, num_heads=heads)
            k = op.RotaryEmbedding(k, cos, sin, interleaved=0, num_heads=kv_heads)
        scale = y4.producer().attributes.get_float("scale", None)
        extra = {} if scale is None else {"scale": scale}
        return op.Attention(q, k, v, bias, past_k, past_v, q_num_heads=heads, kv_num_heads=kv_heads, _outputs=3,
                            **extra)


class Attention3d(RewritePass):
    name = "attention_3d"
    description = "fused Attention/RotaryEmbedding on [batch, seq, hidden]: no per-head Reshape/Transpose"
    min_opset = FUSED_OPS_OPSET

    def rules(self):
        return [_Attention3d.rule(rotary=True), _Attention3d.rule(rotary=False)]
