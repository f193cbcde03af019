"""Residual add + normalization -> one op that also returns the sum for the next residual.

Add(a, b) feeding SimplifiedLayerNormalization becomes com.microsoft SkipSimplifiedLayerNormalization;
Add(a, b) feeding LayerNormalization (GPT-2) becomes com.microsoft SkipLayerNormalization. Run after
fuse_rms_norm.
"""

from onnxscript.rewriter import pattern

from .base import RewritePass


def _same_hidden(a, b, gamma) -> bool:
    """Both addends are [..., hidden] with the norm's hidden size (no broadcasting inside the fused op)."""
    shapes = [v.shape for v in (a, b, gamma)]
    if any(s is None for s in shapes) or len(shapes[0]) != 3 or len(shapes[1]) != 3:
        return False
    return shapes[0][-1] == shapes[1][-1] == shapes[2][-1] and isinstance(shapes[2][-1], int)


class _SkipRmsNorm(pattern.RewriteRuleClassBase):
    def pattern(self, op, a, b, gamma):
        total = op.Add(a, b)
        return op.SimplifiedLayerNormalization(total, gamma, _allow_other_attributes=True, _outputs=["norm"]), total

    def check(self, context, a, b, gamma, norm, **_):
        result = pattern.MatchResult()
        attrs = norm.producer().attributes
        if attrs.get_int("axis", -1) != -1 or attrs.get_int("stash_type", 1) != 1:
            return result.fail("normalization is not over the last axis in fp32")
        return result if _same_hidden(a, b, gamma) else result.fail("shapes do not fit the fused op")

    def rewrite(self, op, a, b, gamma, norm, **_):
        eps = norm.producer().attributes.get_float("epsilon", 1e-5)
        out, _, _, total = op.SkipSimplifiedLayerNormalization(a, b, gamma, epsilon=eps, _domain="com.microsoft",
                                                               _outputs=4)
        return out, total


class _SkipLayerNorm(pattern.RewriteRuleClassBase):
    def pattern(self, op, a, b, gamma, beta):
        total = op.Add(a, b)
        return op.LayerNormalization(total, gamma, beta, _allow_other_attributes=True, _outputs=["norm"]), total

    def check(self, context, a, b, gamma, beta, norm, **_):
        result = pattern.MatchResult()
        attrs = norm.producer().attributes
        if attrs.get_int("axis", -1) != -1 or attrs.get_int("stash_type", 1) != 1:
            return result.fail("normalization is not over the last axis in fp32")
        return result if _same_hidden(a, b, gamma) else result.fail("shapes do not fit the fused op")

    def rewrite(self, op, a, b, gamma, beta, norm, **_):
        eps = norm.producer().attributes.get_float("epsilon", 1e-5)
        out, _, _, total = op.SkipLayerNormalization(a, b, gamma, beta, epsilon=eps, _domain="com.microsoft",
                                                     _outputs=4)
        return out, total


class FuseSkipNorm(RewritePass):
    name = "fuse_skip_norm"
    description = "residual Add + (RMS/Layer)Norm -> Skip(Simplified)LayerNormalization"

    def rules(self):
        return [_SkipRmsNorm.rule(), _SkipLayerNorm.rule()]
