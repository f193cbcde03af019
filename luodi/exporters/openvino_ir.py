"""Lowering to OpenVINO: the exported ONNX graph -> a stateful IR (openvino_model.xml + .bin).

`openvino.convert_model` reads the ONNX graph; then the KV cache moves inside the model: a `beam_idx`
input selects (Gather along the batch) which cached sequence each row continues, and OpenVINO's
MakeStateful transformation turns each past input / present output pair into a ReadValue/Assign variable
whose initial value is an empty cache [batch, kv_heads, 0, head_dim] (batch from input_ids). NNCF
compresses the weights for int8/int4.
"""

import contextlib
import sys
from pathlib import Path

import numpy as np

from ..errors import LuodiError
from ..runtimes.base import kv_names
from ..runtimes.openvino import import_openvino

IR_FILE = "openvino_model.xml"
IR_WEIGHTS = "openvino_model.bin"
BEAM_IDX = "beam_idx"


def _add_beam_idx(model, past_names: list[str]) -> None:
    """A [batch] int32 input choosing, per row, which cached sequence it continues (Gather on every KV input)."""
    ov = import_openvino()
    from openvino import opset13 as ops

    batch = model.input("input_ids").get_partial_shape()[0]
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
    shape = ops.shape_of(model.input("input_ids"), output_type="i64")
    batch = ops.gather(shape, ops.constant(np.array([0], dtype=np.int64)), ops.constant(0))
    for op in model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        dims = list(op.get_output_partial_shape(0))  # [batch, kv_heads, past, head_dim]
        rest = [ops.constant(np.array([d.get_length() if d.is_static else 0], dtype=np.int64)) for d in dims[1:]]
        empty = ops.broadcast(ops.constant(np.float32(0.0)), ops.concat([batch, *rest], 0))
        op.set_arguments([empty])
    model.validate_nodes_and_infer_types()
    if any(i.get_any_name().startswith("past_key_values") for i in model.inputs):
        raise LuodiError("OpenVINO lowering left KV inputs in the model; it is not stateful")


def _calibration_dataset(nncf, token_ids: tuple, window: int = 128, windows: int = 16):
    """NNCF's dataset for the stateful IR: prefills of `window` calibration tokens, each from an empty state."""
    from ..quantization.calibration import prefill_windows

    return nncf.Dataset([feed | {BEAM_IDX: np.zeros(1, dtype=np.int32)}
                         for feed in prefill_windows(token_ids, window)[:windows]])


def _compress(model, compression: dict):
    """NNCF weight compression of the model (mode INT8_ASYM, INT4_SYM, ...; group_size for int4), data-free
    (method rtn) or with NNCF's data-aware AWQ + scale estimation or GPTQ on calibration text."""
    try:
        import nncf
    except ImportError:
        raise LuodiError("NNCF is not installed: pip install 'luodi[openvino]'") from None
    mode = getattr(nncf.CompressWeightsMode, compression["mode"], None)
    if mode is None:
        raise LuodiError(f"unknown NNCF compression mode {compression['mode']!r}")
    options = {"group_size": compression["group_size"], "ratio": 1.0} if "group_size" in compression else {}
    method = compression.get("method", "rtn")
    if method != "rtn":
        if not compression.get("calibration"):
            raise LuodiError(f"{method} needs calibration text: --calib FILE")
        if not compression["mode"].startswith("INT4"):
            raise LuodiError(f"NNCF's {method} compresses to int4 only: use --precision int4")
        options |= {"dataset": _calibration_dataset(nncf, compression["calibration"]), method: True,
                    "scale_estimation": method == "awq"}
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars and tables: keep stdout for --json
        return nncf.compress_weights(model, mode=mode, **options)


def compression_record(compression: dict) -> dict:
    """What the manifest records of an NNCF compression (calibration as a token count)."""
    return {k: v for k, v in compression.items() if k not in ("calibration", "passes")} | (
        {"calibration_tokens": len(compression["calibration"])} if compression.get("calibration") else {})


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
        model = _compress(model, compression)
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
