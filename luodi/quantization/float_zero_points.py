"""Float zero points on MatMulNBits' fast integer-zero-point kernels: w = s·(q − z) becomes s·(q − c) + s·(c − z).

A 4- or 8-bit block stored with a float zero point z (HQQ's grid, or each block's own [min, max] as llama.cpp's
Q4_1 stores it) is what ONNX Runtime 1.32's CPU kernels take a slow path for (HQQ int4 on SmolLM2-135M: 4 tok/s,
78 once lowered; RTN's integer zero points: 100).
With the zero point at the centre c = 2^(bits−1) the block is an ordinary integer-zero-point block, and the
rest, the per-block offset o = s·(c − z), contributes Σ_block(x)·o to each output. So each MatMulNBits with
float zero points becomes:

    MatMulNBits(x, q, s)  +  MatMul(MatMul(x, ones per block [K, K/block]), offsets)

with `offsets` [K/block, N] in fp32 (the same size as the scales). The centre is MatMulNBits' (and
GatherBlockQuantized's) default zero point, so none is stored. Inputs that several such MatMuls read share
one block sum. The result is the same dequantized weight up to fp32 rounding of the offsets.
"""

import numpy as np
from onnx import helper, numpy_helper

FLOAT = 1  # TensorProto.FLOAT


def lower_float_zero_points(model) -> dict[str, str]:
    """Rewrite every MatMulNBits with float zero points (in place); returns {B initializer: offsets initializer}
    for the tied-embedding lookup, which must add the same offsets to the rows it reads."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    sums: dict[tuple[str, int, int], str] = {}
    offsets_of = {}
    for node in list(graph.node):
        zero_points = inits.get(node.input[3]) if node.op_type == "MatMulNBits" and len(node.input) > 3 else None
        if zero_points is None or zero_points.data_type != FLOAT:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        k, n, bits, block = attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]
        blocks = -(-k // block)
        scales = numpy_helper.to_array(inits[node.input[2]]).reshape(n, blocks)
        zeros = numpy_helper.to_array(zero_points).reshape(n, blocks)
        scales, shifts = _centred(scales, zeros, _block_values(inits[node.input[1]], n, blocks, bits), bits)
        offsets = numpy_helper.from_array(shifts.T.astype(np.float32).copy(), f"{node.input[1]}.offsets")
        scales_2d = numpy_helper.from_array(scales, node.input[2])  # [N, blocks], as GatherBlockQuantized reads
        graph.initializer.remove(zero_points)
        graph.initializer.remove(inits[node.input[2]])
        graph.initializer.extend([scales_2d, offsets])
        node.input[3] = ""  # absent: the default zero point is the centre
        while node.input and not node.input[-1]:
            del node.input[-1]
        position = list(graph.node).index(node)
        key = (node.input[0], blocks, block)
        if key not in sums:
            sums[key] = _block_sum(graph, node.input[0], blocks, block, position)
            position += 1
        result = node.output[0]
        node.output[0] = f"{result}/centred"
        correction = helper.make_node("MatMul", [sums[key], offsets.name], [f"{result}/offset"],
                                      name=f"{node.name}/offset")
        add = helper.make_node("Add", [node.output[0], correction.output[0]], [result], name=f"{node.name}/add_offset")
        graph.node.insert(position + 1, add)
        graph.node.insert(position + 1, correction)
        offsets_of[node.input[1]] = offsets.name
    return offsets_of


def _block_values(packed, n: int, blocks: int, bits: int) -> np.ndarray:
    """The quantized values [N, blocks, block] of a MatMulNBits weight (4-bit: two per byte, low nibble first)."""
    data = numpy_helper.to_array(packed).reshape(n, blocks, -1)
    return np.stack([data & 15, data >> 4], axis=-1).reshape(n, blocks, -1) if bits == 4 else data


def _centred(scales: np.ndarray, zeros: np.ndarray, values: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(scales, offsets [N, blocks]) of the centred form s·(q − c) + o of s·(q − z). A block whose values are all
    one level (a row of zeros, as a padding token's embedding) is its offset alone, with scale 0: in the
    centred form its two terms would cancel only in exact arithmetic, and with accuracy_level 4 the first
    is computed on int8-quantized activations (on a zero row of a tiny model's LM head: logits off by up to 0.5)."""
    centre = 1 << (bits - 1)
    offsets = scales * (centre - zeros)
    constant = (values == values[..., :1]).all(axis=-1)
    offsets[constant] = (scales * (values[..., 0] - zeros))[constant]
    return np.where(constant, 0, scales).astype(np.float32), offsets


def _constant(graph, name: str, values) -> str:
    """An initializer `name` holding `values` (added once)."""
    if all(i.name != name for i in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(np.asarray(values), name))
    return name


def _ones_per_block(blocks: int, block: int) -> np.ndarray:
    """[K, K/block] with a 1 where row k lies in block b: x · it sums x over each block; its transpose spreads
    one value per block over the block's positions."""
    return np.repeat(np.eye(blocks, dtype=np.float32), block, axis=0)


def _block_sum(graph, x: str, blocks: int, block: int, position: int) -> str:
    """Insert at `position` x · ones-per-block [K, K/block]: the sums of x over each block of its last dimension,
    for x of any rank, in one MatMul whose small constant every layer shares (so it stays in cache)."""
    ones = _constant(graph, f"block_sum.ones.{blocks}x{block}", _ones_per_block(blocks, block))
    out = f"{x}/block_sum{block}"
    graph.node.insert(position, helper.make_node("MatMul", [x, ones], [out], name=out))
    return out


def add_offsets_to_lookup(graph, position: int, offsets: str, blocks: int, block: int) -> None:
    """After the lookup at `position` (GatherBlockQuantized rows [batch, sequence, K] of a lowered table), add
    each row's block offsets, gathered by token from offsets [K/block, vocab] and spread over their blocks by
    ones-per-block [K/block, K]; in place, the lookup's output name kept."""
    lookup = graph.node[position]
    rows = lookup.output[0]
    lookup.output[0] = f"{rows}/centred"
    spread = _constant(graph, f"block_sum.spread.{blocks}x{block}", _ones_per_block(blocks, block).T.copy())
    nodes = [
        helper.make_node("Gather", [offsets, lookup.input[1]], [f"{rows}/offsets_t"], name=f"{rows}/gather_offsets",
                         axis=1),
        helper.make_node("Transpose", [f"{rows}/offsets_t"], [f"{rows}/offsets"], name=f"{rows}/offsets",
                         perm=[1, 2, 0]),
        helper.make_node("MatMul", [f"{rows}/offsets", spread], [f"{rows}/row_offsets"], name=f"{rows}/spread"),
        helper.make_node("Add", [lookup.output[0], f"{rows}/row_offsets"], [rows], name=f"{rows}/add_offsets"),
    ]
    for node in reversed(nodes):
        graph.node.insert(position + 1, node)
