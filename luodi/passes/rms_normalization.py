"""RMSNorm -> the standard opset-23 RMSNormalization op (for targets that take standard ops only).

Same match as fuse_rms_norm (x * (1 / sqrt(mean(x^2, -1) + eps)) * weight); emits the op the ONNX spec
defines instead of ONNX Runtime's SimplifiedLayerNormalization, which TensorRT's parser would read by name.
"""

from .base import FUSED_OPS_OPSET, RewritePass, scalar
from .fuse_rms_norm import _RmsNorm


class _StandardRmsNorm(_RmsNorm):
    def rewrite(self, op, x, eps, weight, **_):
        return op.RMSNormalization(x, weight, axis=-1, epsilon=scalar(eps), stash_type=1)


class RmsNormalization(RewritePass):
    name = "rms_normalization"
    description = "RMSNorm -> opset-23 RMSNormalization"
    min_opset = FUSED_OPS_OPSET

    def rules(self):
        return [_StandardRmsNorm.rule()]
