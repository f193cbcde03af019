"""SiLU (x * sigmoid(x), the SwiGLU gate's activation) -> com.microsoft QuickGelu with alpha 1.

QuickGelu computes x * sigmoid(alpha * x); ONNX Runtime's CPU provider fuses Sigmoid + Mul into it at
session start anyway, so emitting it in the graph costs nothing at run time and shows the graph as it runs.
"""

from onnxscript.rewriter import pattern

from .base import RewritePass


class _Silu(pattern.RewriteRuleClassBase):
    def pattern(self, op, x):
        return op.Mul(x, op.Sigmoid(x))

    def rewrite(self, op, x, **_):
        return op.QuickGelu(x, alpha=1.0, _domain="com.microsoft")


class FuseSilu(RewritePass):
    name = "fuse_silu"
    description = "x * sigmoid(x) -> QuickGelu(alpha=1)"
    commute = True

    def rules(self):
        return [_Silu.rule()]
