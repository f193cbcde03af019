"""A CPU stand-in for a TensorRT engine and device, for testing luodi's TensorRT backend bookkeeping.

It is NOT TensorRT: "device" buffers are numpy arrays found by their address, and executing a context runs
the export's ONNX graph (the one the engine was built from) under ONNX Runtime, with the KV buffers bound
as past and present exactly as the backend bound them. Like TensorRT it holds each context to its
optimization profile: a shape outside the profile is refused, and an unbound tensor fails the run.
"""

import numpy as np
import pytest
import onnxruntime as ort

from luodi.manifest import read_manifest
from luodi.contract.shapes import covers
from luodi.runtimes.tensorrt import TensorRTBackend


class NumpyDevice:
    """Buffers are numpy arrays; an address is the array's data pointer."""

    stream = 0

    def __init__(self):
        self.buffers = {}

    def _keep(self, array):
        self.buffers[array.ctypes.data] = array
        return array

    def zeros(self, shape, dtype="float32"):
        return self._keep(np.zeros(tuple(shape), dtype=dtype))

    def upload(self, array):
        return self._keep(np.array(array, copy=True))

    @staticmethod
    def address(buffer) -> int:
        return buffer.ctypes.data

    def download(self, buffer):
        return buffer.astype(np.float32)

    def fill(self, buffer, array):
        buffer[:, :, :array.shape[2]] = array


class StandInContext:
    def __init__(self, engine):
        self.engine, self.profile, self.shapes, self.addresses = engine, None, {}, {}
        self.runs = 0

    def set_optimization_profile_async(self, index, stream):
        self.profile = list(self.engine.profiles.values())[index]
        return True

    def set_input_shape(self, name, shape):
        if not covers(self.profile, {name: tuple(shape)}):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def get_tensor_shape(self, name):
        assert name == "logits"
        batch, seq = self.shapes["input_ids"]
        return (batch, seq if seq <= self.engine.logits_window else 1, self.engine.vocab_size)

    def execute_async_v3(self, stream):
        arrays = {name: self.engine.device.buffers[address] for name, address in self.addresses.items()}
        binding = self.engine.session.io_binding()
        for name in self.engine.input_names:
            array = arrays[name]
            assert array.shape == self.shapes[name], f"{name} bound with a shape it was not given"
            if name.startswith("past_key_values"):
                present = name.replace("past_key_values", "present", 1)
                assert self.addresses[present] == self.addresses[name], "KV buffer not aliased"
                value = ort.OrtValue.ortvalue_from_numpy(array)
                binding.bind_ortvalue_input(name, value)
                binding.bind_ortvalue_output(present, value)
            else:
                binding.bind_cpu_input(name, array)
        binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(arrays["logits"]))
        self.engine.session.run_with_iobinding(binding)
        self.runs += 1
        return True


class StandInEngine:
    """create_execution_context() over an export's ONNX graph and the profiles its manifest records."""

    def __init__(self, onnx_path, manifest, device):
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.profiles = manifest.tensorrt.profiles
        self.vocab_size = manifest.spec.vocab_size
        self.logits_window = manifest.logits_window
        self.device = device
        self.contexts = []

    def create_execution_context(self):
        self.contexts.append(StandInContext(self))
        return self.contexts[-1]


def stand_in(folder):
    """(TensorRTBackend over the stand-in engine of a trt export folder, the engine)."""
    manifest = read_manifest(folder)
    if not manifest.tensorrt.profiles:  # the profiles come from an engine build
        pytest.skip("TensorRT's builder is not installed: the trt export has no engine profiles to run under")
    device = NumpyDevice()
    engine = StandInEngine(folder / manifest.model_file, manifest, device)
    backend = TensorRTBackend(engine, manifest.spec, manifest.tensorrt, device, manifest.facts)
    return backend, engine
