"""Block scales and offsets stored at half precision: the file holds them as fp16, a Cast reads them back.

MatMulNBits and GatherBlockQuantized take their scales in the activations' type (fp32 here), and the block
offsets of a lowered float-zero-point weight (float_zero_points.py) are fp32 too: together a sixth of an int4
export (4 + 4 bytes per 32 weights against 16 for the values). llama.cpp stores both in fp16 (Q4_1's d and
m), as do GPTQ and AWQ checkpoints. Each such fp32 initializer is stored as fp16 under `<name>.fp16` and read
through a Cast to fp32 under its own name, which ONNX Runtime folds into a constant when the session loads:
the graph computes with fp32 scales as before, the file is smaller, and no step pays for the Cast.
A tensor is halved only when rounding costs each value at most HALF_RTOL of itself (a scale: so a scale below
fp16's normal range, 6.1e-5, keeps the tensor in fp32) or, for an offset, of its block's quantization step
(an offset near 0 is a nearly centred block; its rounding is measured against the block's step). SmolLM2's
weights come from a GGUF whose d and m are fp16 already, so its minmax scales are exact in fp16.
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

HALF_RTOL = 2.0 ** -10  # twice fp16's unit roundoff: what rounding a normal fp32 value to fp16 may cost
SCALED_OPS = ("MatMulNBits", "GatherBlockQuantized")  # input 2 is the block scales


def store_scales_half(model, offsets_of: dict[str, str] | None = None) -> int:
    """Store the block scales of every MatMulNBits / GatherBlockQuantized, and the block offsets of lowered
    weights (`offsets_of`: MatMulNBits weight -> its offsets, as lower_float_zero_points returns), as fp16 (in
    place, each behind a Cast to fp32); returns the bytes saved."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    units = {node.input[2]: None for node in graph.node if node.op_type in SCALED_OPS}  # None: the value itself
    for node in graph.node:
        if node.op_type == "MatMulNBits" and node.input[1] in (offsets_of or {}):
            offsets = offsets_of[node.input[1]]
            step = numpy_helper.to_array(inits[node.input[2]]).reshape(tuple(inits[offsets].dims)[::-1]).T
            units[offsets] = step
    casts, saved = [], 0
    for name, step in units.items():
        init = inits.get(name)
        if init is None or init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        unit = np.abs(values) if step is None else np.maximum(np.abs(values), np.abs(step))
        if not np.all(np.abs(half.astype(np.float32) - values) <= HALF_RTOL * unit):
            continue
        graph.initializer.remove(init)
        graph.initializer.append(numpy_helper.from_array(half, f"{name}.fp16"))
        casts.append(helper.make_node("Cast", [f"{name}.fp16"], [name], name=f"{name}/to_float",
                                      to=TensorProto.FLOAT))
        saved += values.nbytes - half.nbytes
    for cast in reversed(casts):
        graph.node.insert(0, cast)
    return saved
