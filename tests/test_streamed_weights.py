"""MatMul weights quantized one at a time from the data file (quantization/streamed_weights.py) give exactly what
onnxruntime's quantizer makes of the whole loaded model, and the float weights are not loaded beforehand."""

import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data

from luodi.exporters import export_model
from luodi.quantization import streamed_weights
from luodi.quantization.ort_weights import _min_max_quantizer, _quantizer_module
from luodi.targets.ort import OrtTarget


@pytest.fixture(scope="module")
def float_graph(tmp_path_factory):
    """model.onnx (+ .data) of tiny-llama as the int4 export saves it just before quantizing."""
    folder = tmp_path_factory.mktemp("streamed")
    original = OrtTarget.quantize

    def keep_float(self, onnx_path, *args, **kwargs):
        shutil.copytree(onnx_path.parent, folder / "float")
        return original(self, onnx_path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OrtTarget, "quantize", keep_float)
        export_model("tiny-llama", "ort", folder / "int4", precision="int4", quantization={"method": "rtn"},
                     progress=False)
    return folder / "float" / "model.onnx"


def test_only_the_matmul_weights_stay_on_disk(float_graph):
    model = streamed_weights.load_for_quantization(float_graph)
    matmul_weights = {n.input[1] for n in model.graph.node if n.op_type == "MatMul"}
    on_disk = {i.name for i in model.graph.initializer if uses_external_data(i)}
    assert on_disk and on_disk <= matmul_weights
    assert all(not uses_external_data(i) for i in model.graph.initializer if i.name not in matmul_weights)


@pytest.mark.parametrize("method", ["rtn", "minmax"])
def test_streamed_quantization_is_onnxruntimes_whole_model_quantization(float_graph, method):
    mnq = _quantizer_module()
    if method == "rtn":
        config = mnq.DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=False, accuracy_level=4, bits=4)
        node_quantizer = mnq.DefaultWeightOnlyQuantizer(config)
    else:
        config = mnq.HQQWeightOnlyQuantConfig(block_size=32, bits=4)
        node_quantizer = _min_max_quantizer(config)
    whole = mnq.MatMulNBitsQuantizer(onnx.load(str(float_graph)), algo_config=config)
    whole.node_quantizer = node_quantizer
    whole.process()
    expected = whole.model.model

    loads = []
    streamed = streamed_weights.load_for_quantization(float_graph)
    load = streamed_weights._load
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(streamed_weights, "_load", lambda tensor, folder: (loads.append(tensor.name), load(tensor, folder)))
        streamed_weights.quantize_matmuls(streamed, float_graph.parent, lambda node: node_quantizer)

    assert [(n.op_type, list(n.input)) for n in streamed.graph.node] == \
           [(n.op_type, list(n.input)) for n in expected.graph.node]
    ours = {i.name: i for i in streamed.graph.initializer}
    for tensor in expected.graph.initializer:
        assert not uses_external_data(ours[tensor.name])
        assert np.array_equal(numpy_helper.to_array(ours[tensor.name]), numpy_helper.to_array(tensor)), tensor.name
    quantized = [n for n in expected.graph.node if n.op_type == "MatMulNBits"]
    assert quantized and sorted(loads) == sorted({n.input[1][:-len("_Q4")] for n in quantized})  # each read once


@pytest.mark.parametrize("settings", [dict(bits=4, method="rtn", keep=("lm_head",)), dict(bits=4, method="hqq"),
                                      dict(bits=8, method="rtn"), dict(bits=4, method="rtn_sym", group_size=16)])
def test_every_streamed_method_quantizes_every_matmul_and_leaves_nothing_on_disk(float_graph, settings):
    from luodi.quantization.ort_weights import WeightQuantization, load_float_model, quantize_model

    q = WeightQuantization(accuracy_level=4, **settings)
    matmuls = sum(n.op_type == "MatMul" for n in onnx.load(str(float_graph), load_external_data=False).graph.node)
    model, report = quantize_model(load_float_model(float_graph, q), q, [], folder=float_graph.parent)
    assert report["matmuls_quantized"] == matmuls
    assert not any(uses_external_data(t) for t in model.graph.initializer)
    bits = {a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"}
    assert bits == ({4, 8} if settings.get("keep") else {settings["bits"]})


def test_a_weight_left_in_the_old_data_file_stops_the_save(float_graph, tmp_path, monkeypatch):
    from luodi.errors import LuodiError
    from luodi.quantization import ort_weights

    folder = shutil.copytree(float_graph.parent, tmp_path / "float")
    before = sorted(p.name for p in folder.iterdir())
    monkeypatch.setattr(ort_weights, "quantize_matmuls", lambda *args: None)  # a quantizer that reads nothing
    with pytest.raises(LuodiError, match="unread"):
        ort_weights.quantize_weights(folder / "model.onnx", ort_weights.WeightQuantization(bits=4, accuracy_level=4), [])
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing deleted, nothing written
