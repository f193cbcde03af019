"""One table for a tied embedding and LM head: the token lookup reads the LM head's MatMulNBits weight.

MatMulNBits stores the LM head [vocab, hidden] as 4- or 8-bit blocks along hidden (B [vocab, hidden/block,
block·bits/8], scales [vocab, hidden/block], packed zero points), which is exactly the layout ONNX Runtime's
GatherBlockQuantized reads rows from (gather_axis 0, quantize_axis 1). So the int8 lookup table
(embedding_int8 pass: Gather -> Cast -> Mul(scales) -> Transpose for the tied column lookup) is replaced by
GatherBlockQuantized over the LM head's own initializers, and the int8 table leaves the file. The lookup
then returns the LM head's dequantized rows: the same values the logits are computed with.
"""

import re

import numpy as np
from onnx import helper, numpy_helper

from .float_zero_points import add_offsets_to_lookup

FLOAT, UINT8 = 1, 2  # TensorProto data types
# the quantizer's name for a weight W: W_Q4 / W_Q8 (RTN, HQQ), W_Q4G32 (GPTQ, with its group size)
QUANTIZED_NAME = re.compile(r"(.+)_Q[48](?:G\d+)?")


def _consumers(graph, name: str) -> list:
    return [n for n in graph.node if name in n.input]


def _lookup_chain(graph, table: str) -> list | None:
    """[Gather(int8, ids, axis 1), Cast, Gather(scales), Mul, Transpose] of the tied column lookup, or None."""
    gather = next((n for n in graph.node if n.op_type == "Gather" and n.input[0] == f"{table}.int8"), None)
    if gather is None or helper.get_attribute_value(gather.attribute[0]) != 1:
        return None
    cast = _consumers(graph, gather.output[0])
    mul = _consumers(graph, cast[0].output[0]) if len(cast) == 1 and cast[0].op_type == "Cast" else []
    transpose = _consumers(graph, mul[0].output[0]) if len(mul) == 1 and mul[0].op_type == "Mul" else []
    if len(transpose) != 1 or transpose[0].op_type != "Transpose" or \
            list(helper.get_attribute_value(transpose[0].attribute[0])) != [1, 2, 0]:
        return None
    if helper.get_attribute_value(cast[0].attribute[0]) != FLOAT:
        return None
    scales = next(n for n in graph.node if n.output[0] in mul[0].input and n is not cast[0])
    return [gather, cast[0], scales, mul[0], transpose[0]]


def share_embedding(model, offsets_of: dict[str, str] | None = None) -> bool:
    """Point the tied embedding's lookup at the 4- or 8-bit LM head (in place); False when there is nothing to
    share (untied embeddings, an LM head kept in float or with float zero points, no int8 lookup).
    `offsets_of` names the block offsets of heads lowered from float zero points (float_zero_points.py): the
    lookup adds them to the rows it reads."""
    offsets_of = offsets_of or {}
    graph = model.graph
    for head in graph.node:
        weight = QUANTIZED_NAME.fullmatch(head.input[1]) if head.op_type == "MatMulNBits" else None
        if weight is None:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
        chain = _lookup_chain(graph, weight.group(1))
        zero_points = head.input[3] if len(head.input) > 3 else ""  # absent: the centre, both ops' default
        stored = next((i for i in graph.initializer if i.name == zero_points), None) if zero_points else None
        if attrs.get("bits") not in (4, 8) or chain is None or \
                (zero_points and (stored is None or stored.data_type != UINT8)):
            continue  # GatherBlockQuantized reads packed uint8 zero points (float ones are lowered first)
        row_bytes = attrs["K"] * attrs["bits"] // 8
        shape = numpy_helper.from_array(np.array([attrs["N"], row_bytes], np.int64), f"{head.input[1]}.rows")
        graph.initializer.append(shape)
        data = f"{head.input[1]}.as_rows"
        reshape = helper.make_node("Reshape", [head.input[1], shape.name], [data], name=f"{head.name}/rows")
        inputs = [data, chain[0].input[1], head.input[2]] + ([zero_points] if zero_points else [])
        lookup = helper.make_node("GatherBlockQuantized", inputs,
                                  [chain[-1].output[0]], name=f"{head.name}/embedding", domain="com.microsoft",
                                  gather_axis=0, quantize_axis=1, block_size=attrs["block_size"], bits=attrs["bits"])
        position = list(graph.node).index(chain[0])
        for node in chain:
            graph.node.remove(node)
        graph.node.insert(position, lookup)
        graph.node.insert(position, reshape)
        if head.input[1] in offsets_of:
            add_offsets_to_lookup(graph, position + 1, offsets_of[head.input[1]], attrs["K"] // attrs["block_size"],
                                  attrs["block_size"])
        return True
    return False
