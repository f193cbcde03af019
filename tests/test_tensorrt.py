"""The TensorRT target on a CPU-only machine: TensorRT's own parser takes every trt graph whole, engines
build ahead of time, the graph matches transformers under ONNX Runtime, the profiles cover every shape the
decode loop makes, and the GPU backend's bookkeeping is right (driven through a CPU stand-in, named as
such). Running a real engine needs a GPU: those tests skip with the reason."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

import luodi
from luodi.contract.graph import STEP_WINDOW
from luodi.errors import ContextLengthError, CorruptModelError, LuodiError, ManifestMismatchError
from luodi.runtimes.tensorrt import current_arch, import_tensorrt
from luodi.exporters.trt_legality import check_legality, legality_problems
from luodi.manifest import read_manifest
from luodi.runtimes.base import Backend, KVState
from luodi.runtimes.decode import DecodeLoop
from luodi.runtimes.sampling import GenerationConfig
from luodi.runtimes.drafters import PromptLookup
from luodi.contract.shapes import ShapeLimits, pick_profile, profiles
from luodi.runtimes.speculative import Speculation

from test_parity import _max_diff
from trt_stand_in import stand_in

trt = import_tensorrt(required=False)
needs_trt = pytest.mark.skipif(trt is None, reason="TensorRT (tensorrt or tensorrt_rtx) is not installed")
needs_gpu = pytest.mark.skipif(current_arch() is None, reason="running a TensorRT engine needs an NVIDIA GPU")


@needs_trt
def test_parser_takes_every_tiny_graph_and_the_allow_list_agrees(tiny, export_dir):
    onnx_path = export_dir(tiny, "trt") / "model.onnx"
    assert legality_problems(onnx_path, trt)[1] == []
    assert legality_problems(onnx_path)[1] == []  # the static allow-list, for machines without TensorRT


@needs_trt
def test_both_checkers_name_the_nodes_tensorrt_cannot_take(export_dir):
    onnx_path = export_dir("tiny-llama", "ort") / "model.onnx"  # com.microsoft fused ops
    for module in (trt, None):
        with pytest.raises(LuodiError, match=r"node '.+' \(.*GroupQueryAttention\)"):
            check_legality(onnx_path, module)


@needs_trt
def test_engine_builds_ahead_of_time_with_both_profiles(tiny, export_dir):
    folder = export_dir(tiny, "trt")
    manifest = read_manifest(folder)
    info = manifest.tensorrt
    assert (folder / info.engine_file).stat().st_size == info.engine_bytes > 0
    assert info.module == trt.__name__ and info.arch == (current_arch() or "sm89")
    assert list(info.profiles) == ["decode", "prefill"]
    assert manifest.kv_cache == "scatter_buffer" and manifest.passes["kv_cache_scatter"] == manifest.spec.num_layers


def test_trt_graph_under_onnx_runtime_matches_transformers(tiny, export_dir, reference):
    assert _max_diff(tiny, lambda name: export_dir(name, "trt"), reference, kind="ort") <= 1e-4


@pytest.mark.smollm2
def test_smollm2_trt_graph_parses_and_matches_transformers(export_dir, reference):
    folder = export_dir("smollm2-135m", "trt")
    if trt is not None:
        assert legality_problems(folder / "model.onnx", trt)[1] == []
    assert _max_diff("smollm2-135m", lambda name: folder, reference, kind="ort") <= 1e-3
    prompt = "Summarise in one sentence: the river rose after three days of rain and the bridge closed."
    want = luodi.load("smollm2-135m", backend="torch").generate(prompt, max_new_tokens=16).token_ids
    assert luodi.load(folder, backend="ort").generate(prompt, max_new_tokens=16).token_ids == want


class _Recorder(Backend):
    """Records the shapes each step feeds (what an engine's profiles must cover)."""

    def __init__(self, max_context, max_batch):
        self.max_context, self.max_batch, self.vocab_size, self.shapes = max_context, max_batch, 7, []
        self.logits_window = STEP_WINDOW

    def forward_window(self, state: KVState, input_ids, attention_mask, position_ids):
        self.shapes.append({"input_ids": input_ids.shape, "attention_mask": attention_mask.shape,
                            "position_ids": position_ids.shape})
        state.past_length += input_ids.shape[1]
        return np.zeros((input_ids.shape[0], self.kept_rows(input_ids.shape[1]), self.vocab_size), np.float32)

    def _truncate(self, state, past_length):
        """Nothing is cached."""


def test_profiles_cover_every_shape_the_decode_loop_makes():
    limits = ShapeLimits(max_batch=3, max_context=40)
    kv = ["past_key_values.0.key"]
    all_profiles = profiles(limits, kv, 2, 8)
    recorder = _Recorder(limits.max_context, limits.max_batch)
    rng = np.random.default_rng(0)
    for batch in range(1, limits.max_batch + 1):
        for longest in range(1, limits.max_context):
            prompts = [[1] * int(rng.integers(1, longest + 1)) for _ in range(batch - 1)] + [[1] * longest]
            config = GenerationConfig(max_new_tokens=limits.max_context, ignore_eos=True)
            for _ in DecodeLoop(recorder, prompts, config, eos_ids=set(), pad_id=0):
                pass
        # speculative steps (one sequence): the pending token and up to seven drafts, every one accepted
        for _ in DecodeLoop(recorder, [[1] * 5], config, eos_ids=set(), pad_id=0,
                            speculation=Speculation(PromptLookup())):
            pass
    kv_shape = {kv[0]: (1, 2, limits.max_context, 8)}
    for shapes in recorder.shapes:
        kv_shape[kv[0]] = (shapes["input_ids"][0], 2, limits.max_context, 8)
        pick_profile(all_profiles, {**shapes, **kv_shape})  # raises if no profile covers the step
    assert {s["input_ids"][1] for s in recorder.shapes} == set(range(1, limits.max_context))
    assert {s["input_ids"] for s in recorder.shapes if s["input_ids"][0] == 1} >= {(1, 8)}  # 7 drafts verified
    with pytest.raises(ContextLengthError, match="at most 3"):
        DecodeLoop(recorder, [[1]] * 4, GenerationConfig(), eos_ids=set(), pad_id=0)
    with pytest.raises(ContextLengthError, match="no engine profile"):
        pick_profile(all_profiles, {"input_ids": (1, 41), "attention_mask": (1, 41), "position_ids": (1, 41)})


@needs_trt  # the stand-in reads the profiles an engine build records
def test_backend_bookkeeping_through_a_cpu_stand_in(export_dir):
    """TensorRTBackend's profile choice, shapes, KV aliasing and logits copy, with a stand-in engine that runs
    the engine's own ONNX graph on ONNX Runtime: same tokens as the ONNX Runtime backend, padded batch too."""
    folder = export_dir("tiny-qwen2", "trt")
    backend, engine = stand_in(folder)
    tokenizer = luodi.load(folder, backend="ort").tokenizer
    lm = luodi.api.LanguageModel(backend, tokenizer, [], 0)
    ort_lm = luodi.load(folder, backend="ort")
    prompts = ["The quick brown fox jumps over the lazy dog", "Hi"]
    got = [r.token_ids for r in lm.generate(prompts, max_new_tokens=12, ignore_eos=True)]
    want = [r.token_ids for r in ort_lm.generate(prompts, max_new_tokens=12, ignore_eos=True)]
    assert got == want and all(len(t) == 12 for t in got)
    decode, prefill = engine.contexts
    short_prompt = len(tokenizer.encode(prompts[0])) <= backend.profiles["decode"]["input_ids"][2][1]
    assert (decode.runs, prefill.runs) == ((12, 0) if short_prompt else (11, 1))
    with pytest.raises(ContextLengthError, match="at most 4"):
        lm.generate(["a"] * 5, max_new_tokens=2)


@needs_trt  # the stand-in reads the profiles an engine build records
def test_prompt_beyond_the_prefill_profile_is_refused_before_running(export_dir):
    backend, engine = stand_in(export_dir("tiny-llama", "trt"))
    too_long = np.ones((1, backend.max_context), np.int64)
    with pytest.raises(ContextLengthError, match="no engine profile"):
        backend.forward(backend.new_state(1), too_long, too_long, np.arange(backend.max_context)[None])
    assert all(c.runs == 0 for c in engine.contexts)


def _copy(folder, tmp_path, edit=None):
    out = tmp_path / folder.name
    shutil.copytree(folder, out)
    if edit:
        manifest = json.loads((out / "manifest.json").read_text())
        edit(manifest)
        (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@needs_trt
def test_engine_from_another_tensorrt_is_refused_on_load(export_dir, tmp_path):
    def other_version(manifest):
        manifest["tensorrt"]["version"] = "0.0.1"

    with pytest.raises(LuodiError, match="built with .* 0.0.1; installed is"):
        luodi.load(_copy(export_dir("tiny-llama", "trt"), tmp_path, other_version))


@needs_trt  # without TensorRT the export has no engine, which is its own message
@pytest.mark.skipif(current_arch() is not None, reason="checks the CPU-only message")
def test_running_an_engine_without_a_gpu_says_so(export_dir):
    with pytest.raises(LuodiError, match="needs an NVIDIA GPU.*--backend ort"):
        luodi.load(export_dir("tiny-llama", "trt"))


@needs_trt  # needs an engine file to damage
def test_corrupt_engine_file_is_refused(export_dir, tmp_path):
    folder = _copy(export_dir("tiny-llama", "trt"), tmp_path)
    engine = folder / "model.engine"
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0xFF
    engine.write_bytes(bytes(data))
    with pytest.raises(ManifestMismatchError, match="model.engine"):
        luodi.load(folder)


def test_manifest_without_an_engine_is_refused(export_dir, tmp_path):
    from luodi.runtimes.tensorrt import open_tensorrt

    folder = export_dir("tiny-llama", "trt")
    manifest = replace(read_manifest(folder), tensorrt=None)
    with pytest.raises(CorruptModelError, match="no TensorRT engine"):
        open_tensorrt(folder, manifest)


@needs_trt
def test_unknown_compute_capability_is_a_clear_error(tmp_path):
    from luodi.exporters import export_model
    from luodi.exporters.tensorrt_engine import EngineOptions

    with pytest.raises(LuodiError, match="unknown compute capability 'sm11'"):
        export_model("tiny-llama", target="trt", out=tmp_path / "x", progress=False, engine=EngineOptions(arch="sm11"))
    assert not (tmp_path / "x").exists()


def test_onnx_runtime_providers_are_checked(export_dir):
    with pytest.raises(LuodiError, match="unknown provider"):
        luodi.load(export_dir("tiny-llama", "trt"), backend="ort", providers=["warp"])
    with pytest.raises(LuodiError, match="not available in this onnxruntime"):
        luodi.load(export_dir("tiny-llama", "trt"), backend="ort", providers=["cuda"])


@needs_gpu
@needs_trt
def test_engine_greedy_tokens_match_transformers_on_a_gpu(export_dir):
    folder = export_dir("tiny-llama", "trt")
    want = luodi.load("tiny-llama", backend="torch").generate("Hello there", max_new_tokens=8).token_ids
    assert luodi.load(folder).generate("Hello there", max_new_tokens=8).token_ids == want


@needs_trt
def test_fp16_graph_builds_and_stays_close(tmp_path, reference):
    from luodi.exporters import export_model

    folder = export_model("tiny-qwen2", target="trt", precision="fp16", out=tmp_path / "fp16", progress=False)
    manifest = read_manifest(folder)
    assert manifest.tensorrt.kv_dtype == "float16" and manifest.precision == "fp16"
    assert (folder / "model.engine").stat().st_size > 0
    assert _max_diff("tiny-qwen2", lambda name: folder, reference, kind="ort") <= 1e-2
    backend, _ = stand_in(folder)  # the GPU backend's buffers follow the graph's dtype
    state = backend.new_state(1)
    assert state.cache[0].dtype == np.float16
    logits = backend.forward(state, np.array([[5, 6]]), np.ones((1, 2), np.int64), np.array([[0, 1]]))
    assert logits.dtype == np.float32 and logits.shape == (1, manifest.spec.vocab_size)


def test_without_tensorrt_the_allow_list_checks_and_no_engine_is_built(tmp_path, monkeypatch):
    from luodi.exporters import export_model, tensorrt_engine

    monkeypatch.setattr(tensorrt_engine, "import_tensorrt", lambda required=True: None)
    folder = export_model("tiny-llama", target="trt", out=tmp_path / "no-trt", progress=False)
    info = read_manifest(folder).tensorrt
    assert info.engine_file is None and info.legality.startswith("allow-list")
    assert not (folder / "model.engine").exists()
    with pytest.raises(LuodiError, match="no engine"):
        luodi.load(folder)
    assert luodi.load(folder, backend="ort").generate("Hi", max_new_tokens=3).token_ids


@needs_trt
def test_bf16_graph_builds_an_engine_and_says_it_is_unchecked_here(tmp_path):
    from luodi.exporters import export_model

    folder = export_model("tiny-llama", target="trt", precision="bf16", out=tmp_path / "bf16", progress=False)
    manifest = read_manifest(folder)
    assert manifest.tensorrt.kv_dtype == "bfloat16" and (folder / "model.engine").stat().st_size > 0
    assert manifest.parity["max_abs_diff"] is None and "GPU only" in manifest.parity["unavailable"]
