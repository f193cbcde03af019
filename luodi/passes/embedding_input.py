"""The token-embedding lookup leaves the graph: it takes `inputs_embeds`, which the runtime reads from the file.

ONNX Runtime maps external weights from the data file, and a Gather over a mapped table maps whatever the
page cache holds around each row it reads: on this machine's kernel, folios of up to 2 MB, so a few dozen
distinct tokens make most of SmolLM2's 113 MB table resident, on top of a packed LM head (lm_head_view) that
holds the same numbers. Here the Gather over the token ids becomes a graph input `inputs_embeds` [batch,
seq, hidden]; the table stays in the data file, no node reads it (ONNX Runtime drops it at load), and the
model's metadata names it (EMBEDDING_TABLE_KEY; the export locates it in the manifest) so the runtime reads
each step's rows from the file (luodi/runtimes/embedding_table.py): a copy of a few rows, never a mapping.
Run last, after the final cleanup (which would drop the unread table) and after lm_head_view (whose views name
ranges of it).
"""

import onnx_ir as ir

from ..contract.graph import EMBEDDING_TABLE_KEY, INPUT_IDS, INPUTS_EMBEDS
from .base import LuodiPass

def _row_lookup(ids: ir.Value) -> tuple[ir.Node, list[ir.Node]] | None:
    """(the Gather(table, ids, axis=0) over a 2-D initializer, the Shape nodes reading the ids' dimensions) when
    they are the token ids' only readers, else None."""
    gathers, shapes = [], []
    for use in ids.uses():
        node = use.node
        if node.op_type == "Shape" and node.domain == "" and node.attributes.get_int("start", 0) >= 0 \
                and node.attributes.get_int("end", 2) >= 0:
            shapes.append(node)
        elif node.op_type == "Gather" and node.domain == "" and use.idx == 1 \
                and node.attributes.get_int("axis", 0) == 0:
            gathers.append(node)
        else:
            return None
    if len(gathers) != 1:
        return None
    table = gathers[0].inputs[0]
    if table.const_value is None or not table.is_initializer() or table.shape is None or len(table.shape) != 2:
        return None
    return gathers[0], shapes


class EmbeddingInput(LuodiPass):
    name = "embedding_input"
    description = "embedding Gather -> graph input inputs_embeds; the runtime reads the rows from the data file"

    def apply(self, model: ir.Model) -> int:
        graph = model.graph
        ids = next((v for v in graph.inputs if v.name == INPUT_IDS), None)
        found = _row_lookup(ids) if ids is not None and ids.shape is not None and len(ids.shape) == 2 else None
        if found is None:
            return 0
        gather, shapes = found
        table, rows = gather.inputs[0], gather.outputs[0]
        embeds = ir.Value(name=INPUTS_EMBEDS, type=ir.TensorType(table.dtype),
                          shape=ir.Shape([*ids.shape, table.shape[1]]))
        graph.inputs[graph.inputs.index(ids)] = embeds
        ir.convenience.replace_all_uses_with(rows, embeds)
        for shape in shapes:  # the ids' [batch, seq] are the rows' first two dimensions
            shape.attributes["end"] = ir.AttrInt64("end", min(shape.attributes.get_int("end", 2), 2))
            shape.replace_input_with(0, embeds)
        graph.remove(gather, safe=True)
        model.metadata_props[EMBEDDING_TABLE_KEY] = table.name
        return 1
