"""Lowering to OpenVINO: the exported ONNX graph -> a stateful IR (openvino_model.xml + .bin).

`openvino.convert_model` reads the ONNX graph; then the KV cache moves inside the model: a `beam_idx`
input selects (Gather along the batch) which cached sequence each row continues, and OpenVINO's
MakeStateful transformation turns each past input / present output pair into a ReadValue/Assign variable
whose initial value is an empty cache [batch, kv_heads, 0, head_dim] (batch from input_ids). NNCF
compresses the weights for int8/int4 (luodi/quantization/nncf_weights.py).
"""

from pathlib import Path

import numpy as np

from ..contract.graph import BEAM_IDX, INPUT_IDS, is_past_name, kv_names
from ..errors import LuodiError
from ..quantization.nncf_weights import compress_weights
from ..runtime_libraries import import_openvino

IR_FILE = "openvino_model.xml"
IR_WEIGHTS = "openvino_model.bin"


def _add_beam_idx(model, past_names: list[str]) -> None:
    """A [batch] int32 input choosing, per row, which cached sequence it continues (Gather on every KV input)."""
    ov = import_openvino()
    from openvino import opset13 as ops

    batch = model.input(INPUT_IDS).get_partial_shape()[0]
    beam_idx = ops.parameter(ov.PartialShape([batch]), ov.Type.i32, name=BEAM_IDX)
    beam_idx.output(0).get_tensor().set_names({BEAM_IDX})
    model.add_parameters([beam_idx])
    for name in past_names:
        port = model.input(name)
        readers = port.get_target_inputs()
        selected = ops.gather(port, beam_idx, ops.constant(0))
        for reader in readers:
            reader.replace_source_output(selected.output(0))
    model.validate_nodes_and_infer_types()


def _make_stateful(model, past_names: list[str], present_names: list[str]) -> None:
    """KV inputs/outputs -> ReadValue/Assign variables that start as an empty cache of the batch's size."""
    from openvino import opset13 as ops
    from openvino._offline_transformations import apply_make_stateful_transformation

    apply_make_stateful_transformation(model, dict(zip(past_names, present_names)))
    shape = ops.shape_of(model.input(INPUT_IDS), output_type="i64")
    batch = ops.gather(shape, ops.constant(np.array([0], dtype=np.int64)), ops.constant(0))
    for op in model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        dims = list(op.get_output_partial_shape(0))  # [batch, kv_heads, past, head_dim]
        rest = [ops.constant(np.array([d.get_length() if d.is_static else 0], dtype=np.int64)) for d in dims[1:]]
        empty = ops.broadcast(ops.constant(np.float32(0.0)), ops.concat([batch, *rest], 0))
        op.set_arguments([empty])
    model.validate_nodes_and_infer_types()
    if any(is_past_name(i.get_any_name()) for i in model.inputs):
        raise LuodiError("OpenVINO lowering left KV inputs in the model; it is not stateful")


def lower_to_openvino(onnx_path: Path, out_dir: Path, num_layers: int, compression: dict | None = None) -> Path:
    """Convert `onnx_path` to a stateful IR in out_dir; returns the .xml. `compression`: an NNCF mode (int8,
    int4) or FP16 (weights stored as fp16 in the .bin, computed in f32)."""
    ov = import_openvino()
    model = ov.convert_model(str(onnx_path))
    past, present = kv_names(num_layers)
    _add_beam_idx(model, past)
    _make_stateful(model, past, present)
    fp16 = bool(compression) and compression["mode"] == "FP16"
    if compression and not fp16:
        model = compress_weights(model, compression)
    xml = Path(out_dir) / IR_FILE
    ov.save_model(model, str(xml), compress_to_fp16=fp16)
    return xml


def runtime_op_counts(compiled) -> dict[str, int]:
    """{layer type: count} of a compiled model's runtime graph: what the device actually runs (fused kernels
    appear as ScaledDotProductAttention, RMS, RoPE, ...)."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        kind = str(op.get_rt_info()["layerType"].astype(str))
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
