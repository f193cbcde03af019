"""Weight quantization, one place for every target: ort_weights.py (ONNX Runtime's MatMulNBits, with awq.py,
mixed_precision.py, float_zero_points.py, shared_embedding.py, half_scales.py), nncf_weights.py (OpenVINO, NNCF)
and blocked_dequantize.py (TensorRT's blocked DequantizeLinear, a graph pass); calibration.py feeds all three."""
