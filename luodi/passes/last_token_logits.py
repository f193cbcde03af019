"""Last-token-only logits: the LM head runs on the last position only, so a prefill of N tokens computes
(and copies out) one row of logits instead of N. Drop this pass to keep every position's logits (for
evaluation, or for verifying speculative drafts)."""

import numpy as np
import onnx_ir as ir

from .base import LuodiPass


class LastTokenLogits(LuodiPass):
    name = "last_token_logits"
    description = "LM head on the last position only (logits [batch, 1, vocab])"

    def apply(self, model: ir.Model) -> int:
        graph = model.graph
        logits = next((v for v in graph.outputs if v.name == "logits"), None)
        head = logits.producer() if logits is not None else None
        if head is None or head.op_type != "MatMul":
            return 0
        hidden = head.inputs[0]
        starts, ends, axes = (ir.Value(name=f"last_token.{n}", const_value=ir.tensor(np.array([v], dtype=np.int64),
                                                                                     name=f"last_token.{n}"))
                              for n, v in (("starts", -1), ("ends", np.iinfo(np.int64).max), ("axes", -2)))
        for value in (starts, ends, axes):
            graph.register_initializer(value)
        last = ir.node("Slice", [hidden, starts, ends, axes], name="last_token/slice")
        graph.insert_before(head, last)
        head.replace_input_with(0, last.outputs[0])
        if logits.shape is not None:
            dims = list(logits.shape)
            dims[-2] = 1
            logits.shape = ir.Shape(dims)
        return 1
