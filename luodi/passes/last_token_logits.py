"""Last-token logits: the LM head runs on a step's last MAX_STEP_TOKENS positions only, so a prefill of N tokens
computes (and copies out) at most 8 rows of logits instead of N, while a speculative step still gets the logits
of every position it verifies (one new token plus up to seven drafts). A decode step of one token computes one
row, as before. Drop this pass to keep every position's logits (for evaluation)."""

import numpy as np
import onnx_ir as ir

from ..runtimes.shapes import MAX_STEP_TOKENS
from .base import LuodiPass


class LastTokenLogits(LuodiPass):
    name = "last_token_logits"
    description = f"LM head on a step's last {MAX_STEP_TOKENS} positions at most (logits [batch, <=8, vocab])"

    def apply(self, model: ir.Model) -> int:
        graph = model.graph
        logits = next((v for v in graph.outputs if v.name == "logits"), None)
        head = logits.producer() if logits is not None else None
        if head is None or head.op_type != "MatMul":
            return 0
        hidden = head.inputs[0]
        bounds = (("starts", -MAX_STEP_TOKENS), ("ends", np.iinfo(np.int64).max), ("axes", -2))
        starts, ends, axes = (ir.Value(name=f"last_token.{n}", const_value=ir.tensor(np.array([v], dtype=np.int64),
                                                                                     name=f"last_token.{n}"))
                              for n, v in bounds)
        for value in (starts, ends, axes):
            graph.register_initializer(value)
        last = ir.node("Slice", [hidden, starts, ends, axes], name="last_token/slice")
        graph.insert_before(head, last)
        head.replace_input_with(0, last.outputs[0])
        if logits.shape is not None:
            dims = list(logits.shape)
            dims[-2] = ir.SymbolicDim("logits_positions")
            logits.shape = ir.Shape(dims)
        return 1
