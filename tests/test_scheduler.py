"""Continuous batching (runtimes/scheduler.py) on tiny models: every row of a batch whose sequences join and leave
between steps gives the greedy ids of its prompt alone, on every KV layout ONNX Runtime runs (the ort target's
shared_buffer, concat without inplace_kv_cache, the trt graph's scatter_buffer), on OpenVINO's stateful IR and
through TensorRTBackend's row operations (a CPU stand-in engine, tests/trt_stand_in.py);
n samples prefill once; the pool's rows and KV budget hold; memory follows the real lengths."""

import numpy as np
import pytest
import torch

import luodi
from luodi.errors import LuodiError
from luodi.runtimes.padded_rows import PaddedRows
from luodi.runtimes.sampling import GenerationConfig
from luodi.runtimes.scheduler import Scheduler
from luodi.runtimes.slot_pool import BLOCK, SlotPool

# the first two join together with one length (one batched prefill on the slots), the rest one or two at a time
PROMPTS = [[3, 14, 15, 92, 65, 35], [9, 8, 7, 6, 5, 4], [5, 6], list(range(10, 40)), [7, 8, 9, 10], [100, 200, 300],
           [11] * 12, [42]]
NEW = [20, 11, 7, 15, 25, 10, 18, 9]
LAYOUTS = ["shared_buffer", "concat", "scatter_buffer", "openvino", "tensorrt"]


@pytest.fixture(scope="module")
def models(export_dir, tmp_path_factory):
    """Layout name -> loader of the tiny-llama LanguageModel running it (loaded on first use)."""
    from luodi.exporters import export_model

    def concat():
        return luodi.load(export_model("tiny-llama", out=tmp_path_factory.mktemp("concat") / "m",
                                       passes="-inplace_kv_cache", progress=False))

    def tensorrt():  # TensorRTBackend's row operations over the CPU stand-in engine (tests/trt_stand_in.py)
        from trt_stand_in import stand_in

        folder = export_dir("tiny-llama", "trt")
        backend, _ = stand_in(folder)
        graph = luodi.load(folder, backend="ort")
        return luodi.api.LanguageModel(backend, graph.tokenizer, graph.eos_ids, graph.pad_id)

    loaders = {"shared_buffer": lambda: luodi.load(export_dir("tiny-llama")), "concat": concat, "tensorrt": tensorrt,
               "scatter_buffer": lambda: luodi.load(export_dir("tiny-llama", "trt"), backend="ort"),
               "openvino": lambda: luodi.load(export_dir("tiny-llama", "openvino"))}
    done = {}

    def get(name):
        if name not in done:
            done[name] = loaders[name]()
        return done[name]

    return get


def _alone(lm, prompts=PROMPTS, new=NEW):
    return [lm.generate(p, max_new_tokens=n, ignore_eos=True).token_ids for p, n in zip(prompts, new)]


def _greedy(n):
    return GenerationConfig(max_new_tokens=n, ignore_eos=True)


def _staggered(scheduler, prompts=PROMPTS, new=NEW):
    """Submit the prompts two at a time with a step between: later ones join a running batch."""
    sequences = []
    for i, (prompt, n) in enumerate(zip(prompts, new)):
        sequences += scheduler.submit(prompt, _greedy(n))
        if i % 2:
            scheduler.step()
    scheduler.run()
    return sequences


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rows_joining_and_reusing_slots_match_each_prompt_alone(layout, models):
    """Eight requests through three rows: rows join mid-way, leave at their own budgets, and the next request
    takes a finished row's place; each row's greedy ids are its prompt's alone."""
    lm = models(layout)
    scheduler = Scheduler(lm.backend, lm.eos_ids, lm.pad_id, max_rows=3)
    expected = SlotPool if layout == "shared_buffer" else PaddedRows
    assert type(scheduler.cache) is expected
    shapes = []
    if layout == "shared_buffer":  # record the prefills' shapes: the two 6-token prompts run as one batch
        run = lm.backend.run_bound
        lm.backend.run_bound = lambda binding, ids, *rest: (shapes.append(ids.shape), run(binding, ids, *rest))[1]
    try:
        sequences = _staggered(scheduler)
    finally:
        lm.backend.__dict__.pop("run_bound", None)
    assert layout != "shared_buffer" or (2, 6) in shapes
    assert [s.tokens for s in sequences] == _alone(lm)
    assert all(s.finish_reason == "length" for s in sequences)
    memory = scheduler.cache.memory()
    assert memory["peak_rows"] == 3 and memory["rows"] == 0 and memory["bytes_allocated"] == 0
    if layout == "tensorrt":  # the engine's batch profile bounds the pool
        with pytest.raises(LuodiError, match="at most 4 sequences at once") as error:
            lm.scheduler(max_rows=5)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-qwen2", "tiny-qwen2 int4"])
def test_slots_on_other_families(name, export_dir, quantized):
    """Learned positions (GPT-2), Qwen2's attention biases and int4 MatMulNBits weights through GroupQueryAttention's
    slots."""
    lm = luodi.load(quantized("int4") if name.endswith("int4") else export_dir(name))
    scheduler = Scheduler(lm.backend, lm.eos_ids, lm.pad_id, max_rows=2)
    assert isinstance(scheduler.cache, SlotPool)
    assert [s.tokens for s in _staggered(scheduler)] == _alone(lm)


@pytest.mark.parametrize("layout", ["shared_buffer", "openvino"])
def test_n_samples_prefill_once_and_fork(layout, models):
    """n greedy samples of one prompt are n copies of the prompt alone, from one prefill of it; seeded samples
    differ from each other and repeat with the seed."""
    lm = models(layout)
    scheduler = Scheduler(lm.backend, lm.eos_ids, lm.pad_id, max_rows=6)
    prefilled = []
    original = scheduler.cache.prefill
    scheduler.cache.prefill = lambda prompts, reserve: (prefilled.extend(prompts), original(prompts, reserve))[1]
    greedy = scheduler.submit(PROMPTS[0], _greedy(12), n=4)
    other = scheduler.submit(PROMPTS[2], _greedy(6))
    scheduler.run()
    assert prefilled == [PROMPTS[0], PROMPTS[2]]
    alone = _alone(lm, [PROMPTS[0], PROMPTS[2]], [12, 6])
    assert [s.tokens for s in greedy] == [alone[0]] * 4 and other[0].tokens == alone[1]

    def sampled():
        config = GenerationConfig(max_new_tokens=10, temperature=1.5, seed=7, ignore_eos=True)
        sequences = scheduler.submit(PROMPTS[0], config, n=4)
        scheduler.run()
        return [s.tokens for s in sequences]

    first = sampled()
    assert first == sampled() and len({tuple(t) for t in first}) > 1


def test_the_kv_budget_admits_what_fits_and_refuses_what_never_can(models):
    lm = models("shared_buffer")
    budget = 2 * (len(PROMPTS[0]) + 10)
    scheduler = Scheduler(lm.backend, lm.eos_ids, lm.pad_id, max_rows=8, kv_positions=budget)
    sequences = [scheduler.submit(PROMPTS[0], _greedy(10))[0] for _ in range(3)]
    scheduler.step()
    assert [s.row is not None for s in sequences] == [True, True, False]
    scheduler.run()
    assert scheduler.cache.memory()["peak_rows"] == 2
    assert all(s.tokens == sequences[0].tokens for s in sequences)
    with pytest.raises(LuodiError, match="KV positions") as error:
        scheduler.submit(PROMPTS[2], _greedy(100))
    assert "\n" not in str(error.value)
    with pytest.raises(LuodiError, match="rows"):
        Scheduler(lm.backend, lm.eos_ids, lm.pad_id, max_rows=2).submit(PROMPTS[0], _greedy(4), n=3)


def test_slot_memory_follows_real_lengths(models):
    """A short request holds buffers of its length rounded up to a block, not the max context; they grow when a
    longer sequence joins and are dropped when the pool empties."""
    lm = models("shared_buffer")
    scheduler = Scheduler(lm.backend, lm.eos_ids, lm.pad_id, max_rows=4)
    per_slot = scheduler.cache.position_bytes
    scheduler.submit(PROMPTS[2], _greedy(5))
    scheduler.step()
    assert scheduler.cache.allocated_bytes() == 4 * BLOCK * per_slot < 4 * lm.backend.max_context * per_slot
    scheduler.submit(list(range(1, 101)), _greedy(5))
    scheduler.step()
    assert scheduler.cache.allocated_bytes() == 4 * 2 * BLOCK * per_slot
    memory = scheduler.cache.memory()
    assert memory["positions_in_use"] == (len(PROMPTS[2]) + 2) + 101
    assert memory["bytes_in_use"] == memory["positions_in_use"] * per_slot
    scheduler.run()
    assert scheduler.cache.allocated_bytes() == 0


@pytest.mark.parametrize("layout", ["shared_buffer", "concat"])
def test_a_cancelled_row_leaves_and_the_others_go_on(layout, models):
    lm = models(layout)
    scheduler = Scheduler(lm.backend, lm.eos_ids, lm.pad_id, max_rows=3)
    sequences = [scheduler.submit(p, _greedy(n))[0] for p, n in zip(PROMPTS[:3], NEW[:3])]
    for _ in range(3):
        scheduler.step()
    scheduler.finish(sequences[0], "cancelled")
    assert sequences[0].row is None and scheduler.cache.memory()["rows"] == 2
    scheduler.run()
    alone = _alone(lm, PROMPTS[:3], NEW[:3])
    assert sequences[0].finish_reason == "cancelled" and sequences[0].tokens == alone[0][:len(sequences[0].tokens)]
    assert [s.tokens for s in sequences[1:]] == alone[1:]


def test_log_probabilities_are_the_models(models):
    """The chosen tokens' log-probabilities are log-softmax of the model's own logits; the alternatives are the
    most likely tokens, best first."""
    lm = models("shared_buffer")
    scheduler = Scheduler(lm.backend, lm.eos_ids, lm.pad_id)
    seq = scheduler.submit(PROMPTS[0], _greedy(3), logprobs=5)[0]
    scheduler.run()
    backend = lm.backend
    state = backend.new_state(1, 16)
    ids = np.array([PROMPTS[0]])
    logits = backend.forward(state, ids, np.ones_like(ids), np.arange(ids.shape[1])[None])[0]
    expected = torch.log_softmax(torch.from_numpy(logits).double(), -1).numpy()
    assert seq.logprobs[0] == pytest.approx(expected.max(), abs=1e-5)
    top = seq.top_logprobs[0]
    assert [t for t, _ in top] == list(np.argsort(-expected)[:5]) and top[0][0] == seq.tokens[0]
    assert all(a[1] >= b[1] for a, b in zip(top, top[1:]))


def test_prompts_starting_alike_reuse_a_live_rows_positions(models):
    """Requests sharing a 20-token system prefix (one arriving while another runs, two identical in one admission)
    copy the live row's positions and compute only the rest (an identical prompt: nothing, its logits are kept
    from the first one's prefill); each still gives its greedy ids alone."""
    lm = models("shared_buffer")
    system = list(range(50, 70))
    prompts = [system + [1, 2, 3], system + [4, 5], system + [6, 7, 8, 9], system + [6, 7, 8, 9], [3] * 20]
    new = [12, 9, 7, 10, 5]
    scheduler = Scheduler(lm.backend, lm.eos_ids, lm.pad_id, max_rows=4)
    first = scheduler.submit(prompts[0], _greedy(new[0]))
    scheduler.step()
    rest = [scheduler.submit(p, _greedy(n))[0] for p, n in zip(prompts[1:], new[1:])]
    run, steps = lm.backend.run_bound, []
    lm.backend.run_bound = lambda binding, ids, *rest: (steps.append(ids.shape), run(binding, ids, *rest))[1]
    try:
        scheduler.run()
    finally:
        del lm.backend.run_bound
    assert [s.tokens for s in first + rest] == _alone(lm, prompts, new)
    # the second and third share the system prompt with the first, the fourth all of itself with the third
    assert scheduler.cache.memory()["reused_prefix_positions"] == 20 + 20 + 24
    assert [shape for shape in steps if shape[1] > 1] == [(1, 2), (1, 4), (1, 20)]  # the identical one: no step
