"""RMSNorm -> one normalization op.

Matches x * (1 / sqrt(mean(x^2, -1) + eps)) * weight, the decomposition the canonical decoder's RMSNorm
traces to, and emits ONNX Runtime's SimplifiedLayerNormalization (an ORT op registered in the default
domain).
"""

from onnxscript.rewriter import pattern

from .base import RewritePass, scalar


class _RmsNorm(pattern.RewriteRuleClassBase):
    def pattern(self, op, x, axes, two, eps, weight):
        mean_square = op.ReduceMean(op.Pow(x, two), axes, keepdims=1, _allow_other_attributes=True)
        inv_rms = op.Reciprocal(op.Sqrt(op.Add(mean_square, eps)))
        return op.Mul(op.Mul(x, inv_rms), weight)

    def check(self, context, x, axes, two, eps, weight, **_):
        result = pattern.MatchResult()
        if scalar(two) != 2:
            return result.fail("not a square")
        if scalar(axes) != -1 and scalar(axes) != (len(x.shape) - 1 if x.shape is not None else None):
            return result.fail("mean is not over the last axis")
        if not isinstance(scalar(eps), float):
            return result.fail("epsilon is not a constant")
        if weight.const_value is None or len(weight.shape) != 1:
            return result.fail("weight is not a constant vector")
        return result

    def rewrite(self, op, x, eps, weight, **_):
        return op.SimplifiedLayerNormalization(x, weight, axis=-1, epsilon=scalar(eps), stash_type=1)


class FuseRmsNorm(RewritePass):
    name = "fuse_rms_norm"
    description = "RMSNorm -> SimplifiedLayerNormalization"

    def rules(self):
        return [_RmsNorm.rule()]
