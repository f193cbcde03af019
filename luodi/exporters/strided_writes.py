"""Strided initializers (transposed weights) written to the data file a block of rows at a time.

The traced graph holds many weights as views of another layout: torch's exporter keeps the tied LM head as
the embedding's transpose, and constant folding leaves numpy transposes of the projections. onnx-ir writes a
torch view through `.contiguous()`, a whole copy at once (Gemma 3's 671 MB LM head: 0.6 of a copy of the
weights on top of the save's peak), and numpy writes a strided array one element per call (512 MB in 27 s,
measured here on a busy machine). Copying a block of rows at a time writes the same bytes with at most BLOCK_BYTES extra at any moment.
"""

import numpy as np
import onnx_ir as ir

BLOCK_BYTES = 16 << 20
_NUMPY_NATIVE = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.INT8, ir.DataType.UINT8,
                 ir.DataType.INT16, ir.DataType.UINT16, ir.DataType.INT32, ir.DataType.UINT32, ir.DataType.INT64,
                 ir.DataType.UINT64, ir.DataType.BOOL}


class RowBlockTensor(ir.Tensor):
    """An ir.Tensor over a strided array whose tofile copies BLOCK_BYTES of rows at a time."""

    def tofile(self, file) -> None:
        array = self.numpy()
        rows = max(1, BLOCK_BYTES // max(1, array.nbytes // max(1, array.shape[0])))
        for start in range(0, array.shape[0], rows):
            file.write(np.ascontiguousarray(array[start:start + rows]).data)


def write_strided_by_rows(graph: ir.Graph) -> None:
    """Give every strided initializer of two or more dimensions a RowBlockTensor over the same memory (no copy).
    Packed 4-bit and other non-numpy dtypes are left to onnx-ir."""
    for value in graph.initializers.values():
        tensor = value.const_value
        if tensor is None or isinstance(tensor, RowBlockTensor) or len(tensor.shape) < 2 or \
                tensor.dtype not in _NUMPY_NATIVE:
            continue
        array = tensor.numpy()
        if array.flags.c_contiguous:
            continue
        value.const_value = RowBlockTensor(array, dtype=tensor.dtype, name=tensor.name)

