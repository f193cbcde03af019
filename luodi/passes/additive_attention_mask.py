"""Masked attention scores as an addition: Where(allowed, scores, min) -> scores + Where(allowed, 0, min).

The canonical decoder masks scores by selection; OpenVINO's scaled-dot-product-attention fusion
recognises the additive form (a bias added to the scaled scores before Softmax), and with it fuses the
KV-cache concatenation into its stateful SDPA kernel. Rows with every key hidden stay finite: the scores
plus the dtype's minimum do not overflow for any realistic score.
"""

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from .base import RewritePass, scalar


class _AdditiveMask(pattern.RewriteRuleClassBase):
    def pattern(self, op, allowed, scores, fill):
        return op.Softmax(op.Where(allowed, scores, fill), _allow_other_attributes=True, _outputs=["probs"])

    def check(self, context, allowed, scores, fill, **_):
        result = pattern.MatchResult()
        value = scalar(fill)
        if not isinstance(value, float) or value > -1e30:
            return result.fail("masked scores are not set to the dtype's minimum")
        if allowed.dtype != ir.DataType.BOOL or scores.dtype != ir.DataType.FLOAT:
            return result.fail("not a boolean mask over float scores")
        return result

    def rewrite(self, op, allowed, scores, fill, probs, **_):
        zero = op.Constant(value=ir.tensor(np.array(0.0, dtype=np.float32)))
        axis = probs.producer().attributes.get_int("axis", -1)
        return op.Softmax(op.Add(scores, op.Where(allowed, zero, fill)), axis=axis)


class AdditiveAttentionMask(RewritePass):
    name = "additive_attention_mask"
    description = "Where-masked attention scores -> scores + additive mask (OpenVINO's SDPA fusion form)"

    def rules(self):
        return [_AdditiveMask.rule()]
