"""The transformers model an export traced from is freed (its side of the parity check recorded) before the
quantize and lower steps, which hold copies of the weights of their own (docs/PARITY.md, Gemma 3's memory)."""

import weakref

import pytest

from luodi.exporters import export_model
from luodi.loaders import hf_folder
from luodi.targets.openvino import OpenVinoTarget
from luodi.targets.ort import OrtTarget


@pytest.mark.parametrize("target, precision, step", [("ort", "int8", (OrtTarget, "quantize")),
                                                      ("openvino", "fp32", (OpenVinoTarget, "lower"))])
def test_the_transformers_model_is_freed_before_quantize_and_lower(monkeypatch, tmp_path, target, precision, step):
    loaded, alive_at_step = [], []
    load = hf_folder.load_reference

    def load_and_watch(*args, **kwargs):
        model = load(*args, **kwargs)
        loaded.append(weakref.ref(model))
        return model

    cls, name = step
    original = getattr(cls, name)

    def watched_step(self, *args, **kwargs):
        alive_at_step.append([ref() is not None for ref in loaded])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(hf_folder, "load_reference", load_and_watch)
    monkeypatch.setattr(cls, name, watched_step)
    out = export_model("tiny-llama", target=target, precision=precision, out=tmp_path / "export", progress=False)
    assert alive_at_step == [[False]]  # the step ran once, with the one loaded model already gone
    assert (out / "manifest.json").is_file()
