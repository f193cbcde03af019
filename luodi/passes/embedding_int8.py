"""Embedding lookup from an int8 table: one int8 vector and one scale per token instead of fp32.

A token lookup reads one vector per token, so the table's bytes matter for size and memory, not speed; a
weight-quantized export stores it as int8 (symmetric, one scale per token: max |x| / 127) and the lookup
becomes Gather(int8 table) -> Cast -> Mul(Gather(scales)). Works for row lookups ([vocab, hidden], axis 0)
and the tied embedding's column lookup ([hidden, vocab], axis 1, see embedding_gather). Standard ops only.
The float table stays where other nodes read it (an LM head not quantized).
"""

import numpy as np
import onnx_ir as ir

from .base import LuodiPass

TOKEN_IDS = "input_ids"
TOKENS_PER_BLOCK = 8192  # tokens quantized at a time: a 262K-token table's float temporaries stay ~20 MB


def _quantize(table: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 table, float32 scale per token) for a table whose tokens run along `axis`, a block of tokens at a
    time (each token's numbers are independent of the others')."""
    rows = table if axis == 0 else table.T  # a view: tokens along its first axis
    codes = np.empty(rows.shape, dtype=np.int8)
    scales = np.empty((rows.shape[0], 1), dtype=np.float32)
    for start in range(0, rows.shape[0], TOKENS_PER_BLOCK):
        block = rows[start:start + TOKENS_PER_BLOCK].astype(np.float32)
        scale = np.abs(block).max(axis=1, keepdims=True) / 127.0
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        codes[start:start + len(block)] = np.clip(np.rint(block / scale), -127, 127)
        scales[start:start + len(block)] = scale
    if axis == 0:
        return codes, scales
    return np.ascontiguousarray(codes.T), scales.T


def _lookups(graph: ir.Graph) -> list[ir.Node]:
    """Gathers of the input token ids from a constant 2-D float table, along its token axis (not the rotary
    tables' lookups by position)."""
    found = []
    for node in graph:
        reads_tokens = node.op_type == "Gather" and node.domain == "" and node.inputs[1].name == TOKEN_IDS \
            and node.inputs[1].is_graph_input()
        table = node.inputs[0] if reads_tokens else None
        if table is None or table.const_value is None or table.shape is None or len(table.shape) != 2:
            continue
        if table.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16) and node.attributes.get_int("axis", 0) in (0, 1):
            found.append(node)
    return found


class EmbeddingInt8(LuodiPass):
    name = "embedding_int8"
    description = "token lookup from an int8 table with one scale per token (weight-quantized exports)"

    def apply(self, model: ir.Model) -> int:
        graph = model.graph
        lookups = _lookups(graph)
        for gather in lookups:
            table, ids = gather.inputs
            axis = gather.attributes.get_int("axis", 0)
            q, scale = _quantize(table.const_value.numpy(), axis)
            values = []
            for suffix, array in (("int8", q), ("scales", scale.reshape(-1) if axis == 1 else scale)):
                name = f"{table.name}.{suffix}"
                values.append(ir.Value(name=name, const_value=ir.tensor(array, name=name)))
                graph.register_initializer(values[-1])
            codes = ir.node("Gather", [values[0], ids], {"axis": axis}, name=f"{gather.name}/int8")
            floats = ir.node("Cast", [codes.outputs[0]], {"to": table.dtype}, name=f"{gather.name}/cast")
            scales = ir.node("Gather", [values[1], ids], {"axis": 0}, name=f"{gather.name}/scales")
            nodes = [codes, floats, scales]
            factor = scales.outputs[0]
            if table.dtype != ir.DataType.FLOAT:
                nodes.append(ir.node("Cast", [factor], {"to": table.dtype}, name=f"{gather.name}/scales_cast"))
                factor = nodes[-1].outputs[0]
            product = ir.node("Mul", [floats.outputs[0], factor], name=f"{gather.name}/dequantize")
            graph.insert_before(gather, [*nodes, product])
            old = gather.outputs[0]
            product.outputs[0].shape, product.outputs[0].type = old.shape, old.type
            ir.convenience.replace_all_uses_with(old, product.outputs[0])
            graph.remove(gather, safe=True)
            if not table.uses():
                graph.initializers.pop(table.name)
        return len(lookups)
