"""A tied embedding stored as rows [vocab, hidden], for runtimes that keep one copy of it that way.

The canonical decoder stores a tied embedding as the LM head's [hidden, vocab] matrix. OpenVINO turns a
MatMul by a constant into a FullyConnected layer whose weight is [out, in]: it stores a transposed second
copy of that matrix while the embedding lookup still reads the first. Here the table becomes [vocab,
hidden] once: the lookup is a plain row Gather, and the LM head is MatMul(x, Transpose(rows)), which
OpenVINO reads as the FullyConnected weight itself. Run after embedding_gather and after the last cleanup
(constant folding would materialise the Transpose).
"""

import numpy as np
import onnx_ir as ir

from .base import LuodiPass, lm_head


def _column_lookups(table: ir.Value, head: ir.Node) -> list[ir.Node] | None:
    """The Transpose(Gather(table, ids, axis=1), [1, 2, 0]) lookups of `table`, if they are its only other readers."""
    lookups = []
    for use in table.uses():
        gather = use.node
        if gather is head:
            continue
        if gather.op_type != "Gather" or gather.attributes.get_int("axis", 0) != 1 or use.idx != 0:
            return None
        readers = [u.node for u in gather.outputs[0].uses()]
        if len(readers) != 1 or readers[0].op_type != "Transpose" or \
                list(readers[0].attributes.get_ints("perm", [])) != [1, 2, 0]:
            return None
        lookups.append(gather)
    return lookups


class EmbeddingRows(LuodiPass):
    name = "embedding_rows"
    description = "tied [hidden, vocab] table -> [vocab, hidden] rows: row Gather, LM head MatMul by its Transpose"

    def apply(self, model: ir.Model) -> int:
        graph = model.graph
        head = lm_head(graph)
        if head is None:
            return 0
        table = head.inputs[1]
        lookups = _column_lookups(table, head)
        if not lookups:
            return 0
        array = np.ascontiguousarray(table.const_value.numpy().T)  # a view when the table is one already
        name = table.name + ".rows"
        rows = ir.Value(name=name, shape=ir.Shape(list(array.shape)), type=table.type,
                        const_value=ir.tensor(array, name=name))
        graph.register_initializer(rows)
        transpose = ir.node("Transpose", [rows], {"perm": [1, 0]}, name=f"{head.name}/weight")
        graph.insert_before(head, [transpose])
        head.replace_input_with(1, transpose.outputs[0])
        for gather in lookups:
            old = gather.outputs[0].uses()[0].node
            lookup = ir.node("Gather", [rows, gather.inputs[1]], {"axis": 0}, name=f"{gather.name}/rows")
            graph.insert_before(gather, [lookup])
            lookup.outputs[0].shape, lookup.outputs[0].type = old.outputs[0].shape, old.outputs[0].type
            ir.convenience.replace_all_uses_with(old.outputs[0], lookup.outputs[0])
            graph.remove([old, gather], safe=True)
        graph.initializers.pop(table.name)
        return 1
