"""Is a graph one TensorRT's ONNX parser takes whole? The parser itself answers when TensorRT (or
TensorRT for RTX) is importable; otherwise a static allow-list of the parser version luodi was checked
against answers: ops, opset, domains, and the rules some ops carry. Problems name the offending nodes."""

from pathlib import Path

import numpy as np

from ..errors import LuodiError

ALLOWLIST_VERSION = "tensorrt_rtx 1.7.1"
MAX_OPSET = 24
# default-domain ops of the ONNX spec the TensorRT-RTX 1.7 parser imports (onnx-tensorrt operators.md)
PARSER_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization Cast CastLike
Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual GroupNormalization HardSigmoid HardSwish Identity If
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop MatMul Max
MaxPool Mean Min Mish Mod Mul Neg NonZero Not OneHot Or PRelu Pad Pow QuantizeLinear RMSNormalization Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize RotaryEmbedding Round ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign
Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter Tile
TopK Transpose Trilu Unsqueeze Where Xor
""".split())


def _allowlist_problems(model) -> list[str]:
    """Problems the static allow-list finds in an onnx_ir.Model (empty: the parser should take it)."""
    problems = []
    opset = model.opset_imports.get("", 0)
    if opset > MAX_OPSET:
        problems.append(f"opset {opset} is above {MAX_OPSET}, the newest the parser reads")
    for node in model.graph:
        where = f"node {node.name!r} ({node.domain + '.' if node.domain else ''}{node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: domain {node.domain!r} is not the ONNX standard's")
        elif node.op_type not in PARSER_OPS:
            problems.append(f"{where}: not an op the parser imports")
        elif node.op_type == "Attention" and len([o for o in node.outputs if o.name]) > 1:
            problems.append(f"{where}: TensorRT takes Attention with one output only")
        elif node.op_type == "TensorScatter":
            axis = node.attributes.get_int("axis", -2)
            shape = node.inputs[0].shape
            if shape is None or not isinstance(shape[axis], int):
                problems.append(f"{where}: the cache's sequence axis must be static")
        elif node.op_type == "DequantizeLinear" and node.attributes.get_int("block_size", 0):
            zero = node.inputs[2] if len(node.inputs) > 2 else None
            if zero is not None and (zero.const_value is None or np.any(zero.const_value.numpy() != 0)):
                problems.append(f"{where}: blocked DequantizeLinear needs zero point 0")
    return problems


def _parser_problems(trt, onnx_path: Path) -> list[str]:
    """What TensorRT's own ONNX parser rejects, node by node."""
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return []
    problems = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        problems.append(f"node {error.node_name()!r} ({error.node_operator()}): {error.desc().splitlines()[0][:300]}")
    return problems or ["the parser failed without naming a node"]


def legality_problems(onnx_path: Path, trt=None) -> tuple[str, list[str]]:
    """(checker, problems) for an ONNX file: the parser of the `trt` module given, else the allow-list."""
    if trt is not None:
        return f"{trt.__name__} {trt.__version__} parser", _parser_problems(trt, onnx_path)
    import onnx_ir as ir

    return f"allow-list ({ALLOWLIST_VERSION})", _allowlist_problems(ir.load(str(onnx_path)))


def check_legality(onnx_path: Path, trt=None) -> str:
    """Raise a clear error naming every node TensorRT would reject; return which checker passed the graph."""
    checker, problems = legality_problems(onnx_path, trt)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... {len(problems) - 8} more" if len(problems) > 8 else "")
        raise LuodiError(f"TensorRT cannot take this graph ({checker}): {shown}")
    return checker
