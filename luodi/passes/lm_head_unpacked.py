"""Keep the LM head out of ONNX Runtime's weight prepacking: one copy of the largest matrix, not two.

At session start ONNX Runtime repacks every 2-D MatMul weight into its GEMM layout, a second copy of it;
the file-mapped original is released afterwards unless another node reads it, and a tied embedding's
lookup does. For the LM head ([hidden, vocab], a fifth of SmolLM2's bytes) the repacking buys nothing:
with last_token_logits it multiplies one row per sequence, which ONNX Runtime's single-row kernel reads
straight from the unpacked matrix. Stored as [1, hidden, vocab] (ONNX Runtime packs only 2-D weights) the
mapped file pages are its only copy; a tied embedding's column lookup reads the same tensor (Gather along
axis 2, then Squeeze).
"""

import numpy as np
import onnx_ir as ir

from .base import LuodiPass, lm_head


class LmHeadUnpacked(LuodiPass):
    name = "lm_head_unpacked"
    description = "LM head weight as [1, hidden, vocab]: ONNX Runtime keeps its one mapped copy, unpacked"

    def apply(self, model: ir.Model) -> int:
        graph = model.graph
        head = lm_head(graph)
        if head is None:
            return 0
        weight = head.inputs[1]
        lookups = [u.node for u in weight.uses() if u.node is not head]
        if any(n.op_type != "Gather" or n.attributes.get_int("axis", 0) != 1 for n in lookups):
            return 0
        hidden, vocab = weight.shape
        name = weight.name + ".3d"
        weight3d = ir.Value(name=name, shape=ir.Shape([1, hidden, vocab]), type=weight.type,
                            const_value=ir.tensor(weight.const_value.numpy().reshape(1, hidden, vocab), name=name))
        graph.register_initializer(weight3d)
        head.replace_input_with(1, weight3d)
        for gather in lookups:
            axes = ir.Value(name=f"{gather.name}.axes", const_value=ir.tensor(np.array([0], dtype=np.int64)))
            graph.register_initializer(axes)
            lookup = ir.node("Gather", [weight3d, gather.inputs[1]], {"axis": 2}, name=f"{gather.name}/3d")
            squeeze = ir.node("Squeeze", [lookup.outputs[0], axes], name=f"{gather.name}/squeeze")
            graph.insert_before(gather, [lookup, squeeze])
            old = gather.outputs[0]
            squeeze.outputs[0].shape, squeeze.outputs[0].type = old.shape, old.type
            ir.convenience.replace_all_uses_with(old, squeeze.outputs[0])
            graph.remove(gather, safe=True)
        graph.initializers.pop(weight.name)
        return 1
