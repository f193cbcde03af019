"""Cleanup: constant folding (the onnxscript optimizer's folder: weight transposes, shape arithmetic),
identity and no-op Slice removal, common-subexpression elimination, dead-node removal and initializer
de-duplication (onnx-ir's passes). Its count is how many nodes and initializers it removed."""

import onnx_ir as ir
import onnx_ir.passes.common as common
from onnxscript.optimizer import fold_constants
from onnxscript.rewriter import pattern

from .base import LuodiPass


class _NoopSlice(pattern.RewriteRuleClassBase):
    """Slice(x) from 0 to the end with step 1 on every axis it names is x itself."""

    def pattern(self, op, x, starts, ends, axes, steps):
        return op.Slice(x, starts, ends, axes, steps)

    def check(self, context, x, starts, ends, axes, steps, **_):
        values = [ir.convenience.get_const_tensor(v) for v in (starts, ends, steps)]
        if any(v is None for v in values):
            return pattern.MatchResult().fail("slice bounds are not constant")
        start, end, step = (v.numpy().reshape(-1) for v in values)
        if (start == 0).all() and (end >= 2**62).all() and (step == 1).all():
            return pattern.MatchResult()
        return pattern.MatchResult().fail("not a full slice")

    def rewrite(self, op, x, **_):
        return op.Identity(x)

_NO_LIMIT = 1 << 40


class Cleanup(LuodiPass):
    name = "cleanup"
    description = "constant folding, identity/no-op slice removal, CSE, dead code, initializer de-duplication"

    def apply(self, model) -> int:
        before = len(list(model.graph.all_nodes())) + len(model.graph.initializers)
        fold_constants(model, onnx_shape_inference=False, input_size_limit=_NO_LIMIT, output_size_limit=_NO_LIMIT)
        pattern.RewriteRuleSet([_NoopSlice.rule()]).apply_to_model(model)
        common.IdentityEliminationPass()(model)
        for _ in range(8):  # one CSE sweep merges constants, the next the nodes that read them, ...
            if not common.CommonSubexpressionEliminationPass()(model).modified:
                break
        for step in (common.RemoveUnusedNodesPass(), common.DeduplicateInitializersPass(),
                     common.RemoveUnusedOpsetsPass()):
            step(model)
        return before - len(list(model.graph.all_nodes())) - len(model.graph.initializers)
