"""Tied LM head for ONNX Runtime, packed for the GEMM yet stored once: cheap speculative verification.

ONNX Runtime repacks a constant MatMul weight into its GEMM layout at session start and releases the
file-mapped original unless another node reads it; a tied embedding's lookup does, so a plain packed LM
head keeps two resident copies of the largest matrix (a fifth of SmolLM2's bytes). An unpacked head (a
[1, hidden, vocab] weight, ONNX Runtime packs only 2-D ones) keeps one copy and is fastest for one row, but
ONNX Runtime repacks it on every call of 2-8 rows, so a speculative verifying step cost 1.5-1.9x a plain step.

After embedding_rows (rows [vocab, hidden]; head MatMul(x, Transpose(rows))), the head becomes
com.microsoft FusedMatMul(x, view, transB=1) over views of consecutive row ranges of the table, their
logits concatenated. A view is an initializer marked VIEW_OF: save_onnx stores it as a TensorProto naming
its range of the table's bytes in the data file, not a copy. ONNX Runtime maps each view on its own, packs
it and releases the mapping. The ort pipeline then moves the token lookup out of the graph
(embedding_input), so no node maps the table itself. Views of at most CHUNK_BYTES bound the moment at load
when a view is both mapped and packed.
"""

import math

import onnx_ir as ir

from .base import LOGITS, VIEW_OF, LuodiPass, logits_head

ORT_DOMAIN = "com.microsoft"
CHUNK_BYTES = 16 << 20


def _transposed_rows(head: ir.Node) -> tuple[ir.Node, ir.Value] | None:
    """(Transpose node, rows initializer) when `head` is MatMul(x, Transpose(rows, [1, 0])), else None."""
    if head.op_type != "MatMul" or head.domain != "" or len(head.inputs) != 2:
        return None
    transpose = head.inputs[1].producer()
    if transpose is None or transpose.op_type != "Transpose":
        return None
    if list(transpose.attributes.get_ints("perm", [])) != [1, 0]:
        return None
    rows = transpose.inputs[0]
    if rows.const_value is None or not rows.is_initializer() or rows.shape is None or len(rows.shape) != 2:
        return None
    return transpose, rows


def _views(graph: ir.Graph, rows: ir.Value) -> list[ir.Value]:
    """Initializers viewing consecutive row ranges of `rows`, each of at most CHUNK_BYTES."""
    array = rows.const_value.numpy()
    row_bytes = array.shape[1] * array.itemsize
    per_view = math.ceil(array.shape[0] / math.ceil(array.nbytes / CHUNK_BYTES))
    views = []
    for index, start in enumerate(range(0, array.shape[0], per_view)):
        part = array[start:start + per_view]
        name = f"{rows.name}.lm_head.{index}"
        view = ir.Value(name=name, shape=ir.Shape(part.shape), type=rows.type, const_value=ir.tensor(part, name=name))
        view.meta[VIEW_OF] = (rows.name, start * row_bytes)
        graph.register_initializer(view)
        views.append(view)
    return views


class LmHeadView(LuodiPass):
    name = "lm_head_view"
    description = "tied LM head -> FusedMatMul(transB) over views of the stored rows: packed, one copy"

    def apply(self, model: ir.Model) -> int:
        graph = model.graph
        head, _ = logits_head(graph)
        found = _transposed_rows(head) if head is not None else None
        if found is None or len(found[0].outputs[0].uses()) != 1:
            return 0
        transpose, rows = found
        parts = [ir.node("FusedMatMul", [head.inputs[0], view], {"transB": 1}, domain=ORT_DOMAIN,
                         name=f"{head.name}/{index}") for index, view in enumerate(_views(graph, rows))]
        nodes = parts + ([ir.node("Concat", [p.outputs[0] for p in parts], {"axis": -1}, name=f"{head.name}/concat")]
                         if len(parts) > 1 else [])
        graph.insert_before(head, nodes)
        logits, old = nodes[-1].outputs[0], head.outputs[0]
        logits.shape, logits.type = old.shape, old.type
        for part in parts:
            part.outputs[0].type = old.type
        ir.convenience.replace_all_uses_with(old, logits, replace_graph_outputs=True)
        graph.remove([head, transpose], safe=True)
        if old.name == LOGITS:  # else a final soft-capping makes the logits output
            logits.name = LOGITS
        for opsets in (model.opset_imports, graph.opset_imports):
            opsets.setdefault(ORT_DOMAIN, 1)
        return 1
