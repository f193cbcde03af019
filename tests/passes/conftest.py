"""The traced tiny Llama graph the whole-model pass tests rewrite."""

import pytest

from luodi.exporters import export_model


@pytest.fixture(scope="session")
def traced(tmp_path_factory):
    """Path of tiny-llama's traced graph with only the cleanup pass applied."""
    out = export_model("tiny-llama", out=tmp_path_factory.mktemp("traced") / "t", passes="cleanup", progress=False)
    return out / "model.onnx"
