"""Cleanup: constant folding (the onnxscript optimizer's folder: weight transposes, shape arithmetic),
identity removal, common-subexpression elimination, dead-node removal and initializer de-duplication
(onnx-ir's passes). Its count is how many nodes and initializers it removed."""

import onnx_ir.passes.common as common
from onnxscript.optimizer import fold_constants

from .base import LuodiPass

_NO_LIMIT = 1 << 40


class Cleanup(LuodiPass):
    name = "cleanup"
    description = "constant folding, identity removal, CSE, dead code, initializer de-duplication"

    def apply(self, model) -> int:
        before = len(list(model.graph.all_nodes())) + len(model.graph.initializers)
        fold_constants(model, onnx_shape_inference=False, input_size_limit=_NO_LIMIT, output_size_limit=_NO_LIMIT)
        for step in (common.IdentityEliminationPass(), common.CommonSubexpressionEliminationPass(),
                     common.RemoveUnusedNodesPass(), common.DeduplicateInitializersPass(),
                     common.RemoveUnusedOpsetsPass()):
            step(model)
        return before - len(list(model.graph.all_nodes())) - len(model.graph.initializers)
