"""GELU (tanh approximation) -> com.microsoft FastGelu.

Matches x * (0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))), GPT-2's gelu_new as traced.
"""

import math

from onnxscript.rewriter import pattern

from .base import RewritePass, scalar


class _TanhGelu(pattern.RewriteRuleClassBase):
    def pattern(self, op, x, three, c, k, one, half):
        inner = op.Mul(k, op.Add(x, op.Mul(c, op.Pow(x, three))))
        return op.Mul(x, op.Mul(half, op.Add(op.Tanh(inner), one)))

    def check(self, context, x, three, c, k, one, half, **_):
        result = pattern.MatchResult()
        expected = {"three": (three, 3.0), "c": (c, 0.044715), "k": (k, math.sqrt(2 / math.pi)),
                    "one": (one, 1.0), "half": (half, 0.5)}
        for name, (value, want) in expected.items():
            got = scalar(value)
            if got is None or abs(got - want) > 1e-6:
                return result.fail(f"constant {name} is {got}, not {want}")
        return result

    def rewrite(self, op, x, **_):
        return op.FastGelu(x, _domain="com.microsoft")


class FuseGelu(RewritePass):
    name = "fuse_gelu"
    description = "tanh-approximated GELU -> FastGelu"

    def rules(self):
        return [_TanhGelu.rule()]
