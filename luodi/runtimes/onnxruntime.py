"""ONNX Runtime (CPU) backend: IO binding keeps the KV cache in ORT memory; each step's presents are
bound as the next step's pasts, so the cache never passes through a Python/numpy copy."""

import os
from pathlib import Path

import numpy as np

from ..errors import CorruptModelError, LuodiError
from .base import Backend, KVState


def _session_options(ort, threads: int | None):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 8)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


class OrtBackend(Backend):
    """Runs an exported model.onnx on ONNX Runtime's CPU execution provider."""

    name = "ort"

    def __init__(self, model_path: Path, spec: dict, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise LuodiError("onnxruntime is not installed: pip install 'luodi[ort]'") from None
        self.spec = spec
        self.max_context = spec["max_context"]
        self.vocab_size = spec["vocab_size"]
        try:
            self.session = ort.InferenceSession(str(model_path), _session_options(ort, threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types for bad or truncated files
            raise CorruptModelError(f"{model_path}: ONNX Runtime cannot load the model "
                                    f"({str(e).splitlines()[0][:300]})") from None
        layers = spec["num_layers"]
        self.past_names = [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._kv_shape = (spec["num_kv_heads"], 0, spec["head_dim"])

    def forward(self, state: KVState, input_ids, attention_mask, position_ids) -> np.ndarray:
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids, dtype=np.int64))
        binding.bind_cpu_input("attention_mask", np.ascontiguousarray(attention_mask, dtype=np.int64))
        binding.bind_cpu_input("position_ids", np.ascontiguousarray(position_ids, dtype=np.int64))
        if state.cache is None:
            empty = np.zeros((state.batch, *self._kv_shape), dtype=np.float32)
            for name in self.past_names:
                binding.bind_cpu_input(name, empty)
        else:
            for name, value in zip(self.past_names, state.cache):
                binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        try:
            self.session.run_with_iobinding(binding)
        except Exception as e:  # ORT raises its own types; turn them into one clear line
            raise LuodiError(f"ONNX Runtime failed to run the model: {str(e).splitlines()[0][:300]}") from None
        outputs = binding.get_outputs()
        state.cache = outputs[1:]
        state.past_length += input_ids.shape[1]
        return outputs[0].numpy()[:, -1, :]
