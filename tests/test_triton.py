"""`luodi triton`: the repository's configs parse with Triton's own model-config protobuf and match the graph;
the raw model's implicit-state wiring reproduces luodi's greedy ids when driven the way Triton drives it; the
Python-backend model answers requests (streamed and whole) through Triton's Python API.

Triton Inference Server itself does not run here (it ships as a container, not a wheel): the Python model is
driven through a minimal stand-in of `triton_python_backend_utils` (tensors in, responses out), and the raw
model's state loop is replayed with ONNX Runtime, which is what Triton's onnxruntime backend runs.
"""

import json

import numpy as np
import pytest
from triton_stand_in import Request, load_model, text

import luodi
from luodi.bundles import make_bundle
from luodi.cli import main as cli_main
from luodi.serving.triton import write_triton_repo

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")
json_format = pytest.importorskip("google.protobuf.json_format")

PROMPT = "Once upon a time the"


def _parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def ort_repo(export_dir, tmp_path_factory):
    folder = export_dir("tiny-llama")
    tmp = tmp_path_factory.mktemp("triton")
    bundle = make_bundle(folder, tmp / "tiny-llama-ort.tar")
    return folder, bundle, tmp / "repo", write_triton_repo(bundle, tmp / "repo", threads=1)


def test_configs_parse_and_match_the_graph(ort_repo):
    import onnxruntime as ort

    _, bundle, repo, models = ort_repo
    assert list(models) == ["tiny-llama-ort", "tiny-llama-ort_raw"]
    generate = _parse(repo / "tiny-llama-ort" / "config.pbtxt")
    assert generate.backend == "python" and generate.model_transaction_policy.decoupled
    assert generate.parameters["bundle"].string_value == bundle.name
    assert (repo / "tiny-llama-ort" / "1" / bundle.name).read_bytes() == bundle.read_bytes()
    raw = _parse(repo / "tiny-llama-ort_raw" / "config.pbtxt")
    assert raw.platform == "onnxruntime_onnx"
    session = ort.InferenceSession(str(repo / "tiny-llama-ort_raw" / "1" / "model.onnx"))
    state_inputs = {s.input_name for s in raw.sequence_batching.state}
    state_outputs = {s.output_name for s in raw.sequence_batching.state}
    assert {i.name for i in raw.input} | state_inputs == {i.name for i in session.get_inputs()}
    assert {o.name for o in raw.output} | state_outputs == {o.name for o in session.get_outputs()}
    shapes = {i.name: i.shape for i in session.get_inputs()}
    for state in raw.sequence_batching.state:
        graph_dims = shapes[state.input_name]
        assert len(state.dims) == len(graph_dims)
        assert all(d == g for d, g in zip(state.dims, graph_dims) if isinstance(g, int) and d != -1)


def test_raw_model_state_loop_reproduces_luodi_greedy(ort_repo):
    """Replay Triton's implicit state: state starts as initial_state zeros, each response's state outputs
    become the next request's state inputs; the greedy ids must be luodi's."""
    import onnxruntime as ort

    folder, _, repo, _ = ort_repo
    lm = luodi.load(folder)
    prompt = lm.tokenizer.encode(PROMPT)
    expected = lm.generate(prompt, max_new_tokens=10, ignore_eos=True).token_ids
    raw = _parse(repo / "tiny-llama-ort_raw" / "config.pbtxt")
    session = ort.InferenceSession(str(repo / "tiny-llama-ort_raw" / "1" / "model.onnx"))
    state = {s.input_name: np.zeros(tuple(s.initial_state[0].dims), np.float32) for s in raw.sequence_batching.state}
    outputs = [s.output_name for s in raw.sequence_batching.state]
    ids, tokens, past = prompt, [], 0
    for _ in range(10):
        feeds = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, past + len(ids)), np.int64),
                 "position_ids": np.arange(past, past + len(ids), dtype=np.int64)[None]}
        logits, *present = session.run(["logits", *outputs], feeds | state)
        state = {s.input_name: value for s, value in zip(raw.sequence_batching.state, present)}
        past += len(ids)
        ids = [int(logits[0, -1].argmax())]
        tokens.append(ids[0])
    assert tokens == expected


def test_python_model_streams_and_answers(ort_repo, monkeypatch, tmp_path):
    folder, _, repo, _ = ort_repo
    monkeypatch.setenv("LUODI_CACHE", str(tmp_path))
    model = load_model(repo / "tiny-llama-ort" / "1" / "model.py", monkeypatch).TritonPythonModel()
    config = json_format.MessageToJson(_parse(repo / "tiny-llama-ort" / "config.pbtxt"),
                                       preserving_proto_field_name=True)  # what Triton hands the model
    model.initialize({"model_config": config, "model_repository": str(repo / "tiny-llama-ort"),
                      "model_version": "1"})
    expected = luodi.load(folder).generate(PROMPT, max_new_tokens=8)
    streamed = Request({"text_input": text(PROMPT), "max_tokens": [8], "stream": [True]})
    whole = Request({"text_input": text(PROMPT), "max_tokens": [8]})
    broken = Request({"max_tokens": [8]})
    assert model.execute([streamed, whole, broken]) is None
    pieces = [r.outputs["text_output"] for r, flags in streamed.sent if not flags]
    final, flags = streamed.sent[-1]
    assert flags == 1 and "".join(pieces) == expected.text and len(pieces) > 1
    assert final.outputs["finish_reason"] == expected.finish_reason
    (answer, flags), = whole.sent
    assert flags == 1 and answer.outputs["text_output"] == expected.text
    (error, flags), = broken.sent
    assert flags == 1 and "no text_input" in error.error


def test_openvino_bundle_gets_the_generate_model_only(export_dir, tmp_path, capsys):
    folder = export_dir("tiny-llama", "openvino")
    bundle = make_bundle(folder, tmp_path / "ov.tar")
    lm = luodi.load(bundle, cache_dir=tmp_path / "cache")
    assert lm.generate(PROMPT, max_new_tokens=8).token_ids == luodi.load(folder).generate(
        PROMPT, max_new_tokens=8).token_ids
    assert cli_main(["triton", str(bundle), "--out", str(tmp_path / "repo"), "--name", "ov"]) == 0
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["ov"]
    assert _parse(tmp_path / "repo" / "ov" / "config.pbtxt").backend == "python"


def test_tensorrt_bundle_serves_its_engine_as_a_plan(export_dir, tmp_path):
    folder = export_dir("tiny-llama", "trt")
    manifest = json.loads((folder / "manifest.json").read_text())
    if not manifest["tensorrt"]["engine_file"]:
        pytest.skip("TensorRT is not installed, so the export has no engine")
    bundle = make_bundle(folder, tmp_path / "trt-bundle")
    models = write_triton_repo(bundle, tmp_path / "repo")
    raw_name = list(models)[1]
    raw = _parse(tmp_path / "repo" / raw_name / "config.pbtxt")
    assert raw.platform == "tensorrt_plan"
    assert raw.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    plan = tmp_path / "repo" / raw_name / "1" / "model.plan"
    assert plan.read_bytes() == (folder / manifest["tensorrt"]["engine_file"]).read_bytes()
