"""Last-token logits: a prefill of N tokens runs the LM head on (and copies out) the last position only, not N.
A step of at most STEP_WINDOW tokens keeps every position's logits, which is what a speculative step
verifies (one new token plus up to seven drafts); a decode step of one token is one row either way. A final
soft-capping after the LM head (Gemma 2) follows it onto the kept rows. Drop this pass to keep every
position's logits (for evaluation)."""

import numpy as np
import onnx_ir as ir

from .base import LuodiPass, logits_head
from ..contract.graph import STEP_WINDOW


LOGITS_POSITIONS = "logits_positions"  # the symbolic dim: sequence if sequence <= STEP_WINDOW else 1
LAST_ROWS = "last_token/slice"  # the Slice the LM head reads (the quality proxy reads around it)


class LastTokenLogits(LuodiPass):
    name = "last_token_logits"
    description = (f"LM head on the last position of a prefill, on every position of a step of <= {STEP_WINDOW} "
                   "tokens (speculative verification)")

    def apply(self, model: ir.Model) -> int:
        graph = model.graph
        head, tail = logits_head(graph)
        if head is None or head.op_type != "MatMul":
            return 0
        hidden = head.inputs[0]
        consts = {n: ir.Value(name=f"last_token.{n}", const_value=ir.tensor(np.array([v], dtype=np.int64),
                                                                          name=f"last_token.{n}"))
                  for n, v in (("window", STEP_WINDOW), ("one", 1), ("ends", np.iinfo(np.int64).max),
                               ("axes", -2))}
        for value in consts.values():
            graph.register_initializer(value)
        # rows = 1 if seq > window else seq; the LM head reads the last `rows` positions
        seq = ir.node("Shape", [hidden], {"start": -2, "end": -1}, name="last_token/seq")
        longer = ir.node("Greater", [seq.outputs[0], consts["window"]], name="last_token/longer")
        rows = ir.node("Where", [longer.outputs[0], consts["one"], seq.outputs[0]], name="last_token/rows")
        starts = ir.node("Neg", [rows.outputs[0]], name="last_token/starts")
        last = ir.node("Slice", [hidden, starts.outputs[0], consts["ends"], consts["axes"]], name=LAST_ROWS)
        graph.insert_before(head, [seq, longer, rows, starts])
        graph.insert_before(head, last)
        head.replace_input_with(0, last.outputs[0])
        # named, so a memory plan can size them; the LM head's output and any soft-capping after it
        for value, like in ((last.outputs[0], hidden), *((v, v) for v in tail)):
            if like.shape is not None:
                dims = list(like.shape)
                dims[-2] = ir.SymbolicDim(LOGITS_POSITIONS)
                value.shape, value.type = ir.Shape(dims), like.type
        return 1
