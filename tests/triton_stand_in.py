"""A stand-in for Triton's `triton_python_backend_utils` and its requests, for driving luodi's Python-backend
model (luodi/serving/triton_python_model.py) without a Triton server: tensors in, responses out.

It is NOT Triton: only the part of the API the model uses (tensors, responses, errors, the final flag), with
each request's sender recording what was sent as (response, flags).
"""

import importlib.util
import sys
import types

import numpy as np


class Tensor:
    def __init__(self, name, array):
        self.name, self._array = name, np.asarray(array)

    def as_numpy(self):
        return self._array


class Request:
    """A request's input tensors; `sent` collects its responses."""

    def __init__(self, inputs: dict):
        self.inputs = {k: Tensor(k, v) for k, v in inputs.items()}
        self.sent = []

    def get_response_sender(self):
        return types.SimpleNamespace(send=lambda response=None, flags=0: self.sent.append((response, flags)))


def triton_utils():
    """The part of Triton's `triton_python_backend_utils` the model uses: tensors, responses, errors, flags."""
    utils = types.ModuleType("triton_python_backend_utils")
    utils.Tensor = Tensor
    utils.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    utils.InferenceResponse = lambda output_tensors, error=None: types.SimpleNamespace(
        outputs={t.name: t.as_numpy()[0].decode() for t in output_tensors}, error=error)
    utils.TritonError = str
    utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
    return utils


def load_model(model_py, monkeypatch):
    """Import a repository's model.py with the stand-in utilities in place; returns its module."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", triton_utils())
    spec = importlib.util.spec_from_file_location("luodi_triton_model", model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def text(value: str):
    """A TYPE_STRING tensor's value as Triton hands it to the model."""
    return np.array([value.encode()], dtype=np.object_)
