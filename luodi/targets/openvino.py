"""The `openvino` target: a stateful OpenVINO IR (the KV cache inside the infer request); fp16 weights in the
.bin, or int8/int4 through NNCF (luodi/quantization/nncf_weights.py)."""

from dataclasses import replace
from pathlib import Path

from ..contract.manifest import ModelSpec
from ..errors import LuodiError
from .base import Lowered, Settings, Target

SETTINGS = {"method": ("rtn", "awq", "gptq"), "group_size": None, "calibration": None}


class OpenVinoTarget(Target):
    """OpenVINO: the ONNX graph is lowered to a stateful IR, compressed by NNCF for int8/int4."""

    section = "openvino"

    def settings(self, precision, quantization, engine) -> Settings:
        """fp32/fp16, or an NNCF compression (mode, group size) with the user's method and calibration text."""
        settings = self.base_settings(precision)
        if settings.compression is None or settings.compression["mode"] == "FP16":
            self.refuse_quantization(settings, quantization)
        if not quantization:
            return settings
        unsupported = sorted(k for k in quantization if k not in SETTINGS)
        if unsupported:
            raise LuodiError(f"the openvino target does not take {', '.join(unsupported)}; it takes --method "
                             "rtn|awq|gptq, --group-size and --calib")
        if quantization.get("method", "rtn") not in SETTINGS["method"]:
            raise LuodiError(f"method {quantization['method']!r} is not available for openvino (NNCF); available: "
                             f"{', '.join(SETTINGS['method'])}")
        return replace(settings, compression={**settings.compression, **quantization})

    def steps(self, settings: Settings) -> dict[str, str]:
        return {"lower": "lower to OpenVINO"}

    def lower(self, onnx_path: Path, folder: Path, spec: ModelSpec, settings: Settings) -> Lowered:
        """The ONNX graph -> openvino_model.xml/.bin (the ONNX files removed), and what OpenVINO's CPU plugin
        compiles it into (runtime op counts: the fused kernels it uses)."""
        from ..quantization.nncf_weights import compression_record
        from ..runtime_libraries import compile_options, import_openvino
        from ..exporters.openvino_ir import lower_to_openvino, runtime_op_counts

        compression = settings.compression
        xml = lower_to_openvino(onnx_path, folder, spec.num_layers, compression)
        for path in (onnx_path, onnx_path.with_name(onnx_path.name + ".data")):
            path.unlink()
        options = compile_options(2, "LATENCY", kv_f32=not compression)
        compiled = import_openvino().Core().compile_model(str(xml), "CPU", options)
        section = {"runtime_ops": runtime_op_counts(compiled),
                   **({"compression": compression_record(compression)} if compression else {})}
        return Lowered(xml.name, xml.with_suffix(".bin").stat().st_size, section)


TARGET = OpenVinoTarget
