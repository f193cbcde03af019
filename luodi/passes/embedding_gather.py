"""Tied-embedding lookup: one Gather over the token ids instead of flatten, gather, transpose, reshape.

The canonical decoder stores a tied embedding once, as the LM head's [hidden, vocab] matrix, and looks
tokens up as columns: index_select over the flattened ids, transpose, reshape to [batch, seq, hidden],
which traces to a dozen nodes of shape arithmetic. Gather along axis 1 takes the [batch, seq] ids as
they are ([hidden, batch, seq]), and one Transpose makes it [batch, seq, hidden].
"""

import onnx_ir as ir
from onnxscript.rewriter import pattern

from .base import RewritePass

_PASS_THROUGH = ("Reshape", "Cast", "Flatten")


def _token_ids(index: ir.Value) -> ir.Value | None:
    """The 2-D integer tensor `index` is a flattened copy of (through Reshape/Cast only), else None."""
    value = index
    while value.producer() is not None and value.producer().op_type in _PASS_THROUGH:
        value = value.producer().inputs[0]
    if value is index or value.shape is None or len(value.shape) != 2 or value.dtype != ir.DataType.INT64:
        return None
    return value


class _ColumnLookup(pattern.RewriteRuleClassBase):
    def pattern(self, op, table, index, shape):
        columns = op.Gather(table, index, axis=1, _outputs=["columns"])
        return op.Reshape(op.Transpose(columns, perm=[1, 0]), shape, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, table, index, columns, out, **_):
        result = pattern.MatchResult()
        ids = _token_ids(index)
        if ids is None or columns.shape is None or len(columns.shape) != 2:
            return result.fail("the index is not flattened token ids")
        if table.shape is None or len(table.shape) != 2 or out.shape is None or len(out.shape) != 3:
            return result.fail("not a [hidden, vocab] table looked up into [batch, seq, hidden]")
        if list(out.shape)[:2] != list(ids.shape) or out.shape[2] != table.shape[0]:
            return result.fail("the reshape is not to [batch, seq, hidden] of the ids")
        return result

    def rewrite(self, op, table, index, **_):
        return op.Transpose(op.Gather(table, _token_ids(index), axis=1), perm=[1, 2, 0])


class EmbeddingGather(RewritePass):
    name = "embedding_gather"
    description = "tied-embedding column lookup (flatten, Gather, Transpose, Reshape) -> Gather + Transpose"

    def rules(self):
        return [_ColumnLookup.rule()]
