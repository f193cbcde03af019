"""luodi compress on a tiny Llama: each pruning axis removes exactly what it says and leaves a model that
transformers loads and every target exports; distillation lowers the KL to the original; a resumed run
ends where an uninterrupted one does; bad input is refused in one line."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from luodi.cli import main as cli_main
from luodi.compress import distill as distill_module
from luodi.compress.checkpoint import checkpoint_dir
from luodi.compress.distill import DistillSettings
from luodi.compress.low_rank import planned_ranks
from luodi.compress.pipeline import CompressSettings, compress_model
from luodi.compress.plan import count_params, plan_removal, shape_after
from luodi.contract.quantization import DEFAULT_GROUP_SIZE
from luodi.exporters import export_model
from luodi.exporters.trt_legality import legality_problems
from luodi.loaders.hf_folder import load_reference
from luodi.loaders.tiny import build_tiny
from luodi.runtimes.tensorrt import import_tensorrt

# 4 blocks, 8 query heads in 4 KV groups; a wide initialisation so the teacher's distributions are peaked
# enough that pruning moves them measurably
ARCH = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=4, max_position_embeddings=256, initializer_range=0.2)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: tiny matrices run slower on two contended cores than on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("compress") / "teacher"
    folder.mkdir()
    build_tiny("llama", dict(ARCH), 0, folder)
    return folder


def _compress(teacher, out, prune, params=0.7, size_budget_mb=None, low_rank=None, **distill):
    settings = CompressSettings(params=params, size_budget_mb=size_budget_mb, prune=prune, calib_tokens=1024,
                                low_rank=low_rank,
                                distill=DistillSettings(**({"tokens": None, "minutes": None, "seq": 128,
                                                            "autocast": "fp32"} | distill)))
    return compress_model(str(teacher), out, settings, progress=False)


def _removed_params(axis: str, record: dict, c: dict) -> int:
    """What an axis should remove, counted from the original shapes (independently of luodi's planner)."""
    layers, hidden, inter, heads, kv = (c["num_hidden_layers"], c["hidden_size"], c["intermediate_size"],
                                        c["num_attention_heads"], c["num_key_value_heads"])
    head_dim, vocab = hidden // heads, c["vocab_size"]
    removed = record["prune"]["removed"][axis]
    if axis == "depth":
        block = 2 * hidden + 2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim + 3 * hidden * inter
        return len(removed["blocks_removed"]) * block
    if axis == "mlp":
        return layers * 3 * hidden * removed["channels_per_block"]
    if axis == "heads":
        groups = {len(g) for g in removed["kv_groups_removed"].values()}
        assert len(groups) == 1
        per_group = heads // kv
        return layers * groups.pop() * head_dim * hidden * (2 * per_group + 2)
    r = len(removed["channels_removed"])  # hidden: embedding and LM head, 2 norms a block + final, every projection
    tables = 1 if c.get("tie_word_embeddings") else 2
    return r * (tables * vocab + 1 + layers * (2 + 2 * heads * head_dim + 2 * kv * head_dim + 3 * inter))


@pytest.mark.parametrize("axis", ["depth", "heads", "mlp", "hidden"])
def test_each_axis_removes_what_it_says_and_exports(teacher, tmp_path, axis):
    out = tmp_path / axis
    record = _compress(teacher, out, axis, params=0.9 if axis == "heads" else 0.7)
    original = json.loads((teacher / "config.json").read_text())
    model = load_reference(out)  # transformers loads it as it is
    count = sum(p.numel() for p in model.parameters())
    assert count == record["params"]["compressed"] == record["params"]["original"] - _removed_params(
        axis, record, original)
    assert count <= (0.9 if axis == "heads" else 0.7) * record["params"]["original"]
    config = json.loads((out / "config.json").read_text())
    assert config["head_dim"] == original["hidden_size"] // original["num_attention_heads"]
    assert set(record["quality"]) == {"original", "compressed"}
    manifest = json.loads((export_model(str(out), target="ort", out=tmp_path / "ort", progress=False)
                           / "manifest.json").read_text())
    assert manifest["parity"]["max_abs_diff"] < 1e-4 and manifest["parity"]["greedy_match"]


def test_every_axis_at_once_exports_to_openvino_and_trt(teacher, tmp_path):
    out = tmp_path / "all"
    # an integer rank: the widths left (48, 96) are too narrow for a fraction's rank, a multiple of 32, to save anything
    record = _compress(teacher, out, "depth,heads,mlp,hidden", params=0.4, low_rank=16)
    assert set(record["prune"]["removed"]) == {"depth", "heads", "mlp", "hidden"} and record["low_rank"]["ranks"]
    assert record["params"]["compressed"] <= 0.4 * record["params"]["original"]
    manifest = json.loads((export_model(str(out), target="openvino", out=tmp_path / "ov", progress=False)
                           / "manifest.json").read_text())
    assert manifest["parity"]["max_abs_diff"] < 1e-4
    trt = import_tensorrt(required=False)
    if trt is None:
        pytest.skip("TensorRT (tensorrt or tensorrt_rtx) is not installed: the parser check cannot run")
    folder = export_model(str(out), target="trt", out=tmp_path / "trt", progress=False)
    assert legality_problems(folder / "model.onnx", trt)[1] == []


def test_low_rank_stores_products_of_rank_r_and_the_export_reads_the_factors(teacher, tmp_path):
    out = tmp_path / "lr"
    record = _compress(teacher, out, "auto", params=None, low_rank=24, tokens=1024, lr=1e-3)
    config = json.loads((teacher / "config.json").read_text())
    h, i, kv = config["hidden_size"], config["intermediate_size"], config["num_key_value_heads"] * 8
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h), "gate_proj": (h, i),
              "up_proj": (h, i), "down_proj": (i, h)}
    ranks = record["low_rank"]["ranks"]
    saved = sum(a * b - r * (a + b) for path, r in ranks.items() for a, b in [shapes[path.rsplit(".", 1)[1]]])
    # rank 24 shrinks 64x64 and 64x128 weights, not the 64x32 key and value projections
    assert set(path.rsplit(".", 1)[1] for path in ranks) == {"q_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert record["params"]["compressed"] == record["params"]["original"] - saved
    assert record["params"]["in_folder"] == record["params"]["original"] and record["prune"]["removed"] == {}
    weights = load_file(out / "model.safetensors")
    assert all(torch.linalg.matrix_rank(weights[path + ".weight"]) <= 24 for path in ranks)
    exported = [json.loads((export_model(str(folder), target="ort", out=tmp_path / name, progress=False)
                            / "manifest.json").read_text()) for folder, name in ((out, "f"), (teacher, "t"))]
    assert exported[0]["parity"]["max_abs_diff"] < 1e-4 and exported[0]["parity"]["greedy_match"]
    assert exported[1]["memory"]["weight_bytes"] - exported[0]["memory"]["weight_bytes"] == 4 * saved


# SmolLM2-135M's shapes: the widths and ranks compress leaves on a real model must divide into int4's groups
SMOLLM2 = dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)


@pytest.mark.parametrize("params", [0.9, 0.8, 0.7])
def test_widths_and_ranks_left_divide_into_int4_groups(params):
    for config in (SMOLLM2, SMOLLM2 | {"intermediate_size": 1500}):  # a width int4's groups do not divide
        original = count_params(config)
        for axes in (("mlp",), ("mlp", "depth")):
            left = shape_after(config, plan_removal(config, axes, int(params * original)))
            assert left["intermediate_size"] < config["intermediate_size"]
            assert left["intermediate_size"] % DEFAULT_GROUP_SIZE == 0, (axes, left)
    fraction = params - 0.3  # 0.6, 0.5, 0.4 of each weight's full rank
    ranks = planned_ranks(SMOLLM2 | {"head_dim": 64}, fraction)
    assert ranks and all(r % DEFAULT_GROUP_SIZE == 0 for r in ranks.values()), sorted(set(ranks.values()))


@pytest.mark.parametrize("ranks", [{"model.layers.9.mlp.down_proj": 4}, {"model.layers.0.mlp.down_proj": 64},
                                   {"../../etc/passwd": 4}, {"model.layers.0.mlp.down_proj": "4"}, []])
def test_a_forged_low_rank_record_is_refused_in_one_line(teacher, tmp_path, capsys, ranks):
    folder = tmp_path / "forged"
    folder.mkdir()
    for path in teacher.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "compression.json").write_text(json.dumps({"low_rank": {"ranks": ranks}}))
    code, err = _cli(capsys, "export", folder, "--out", tmp_path / "o")
    assert code == 1 and err.count("\n") == 1 and "compression.json" in err and "low_rank" in err, err


def test_distillation_lowers_the_kl_to_the_original(teacher, tmp_path):
    record = _compress(teacher, tmp_path / "d", "depth", tokens=16384, lr=1e-3)
    for text, pruned in record["quality"]["compressed"].items():
        distilled = record["quality"]["distilled"][text]
        assert distilled["kl_to_teacher"] < 0.9 * pruned["kl_to_teacher"], text
    assert record["distillation"]["steps"] == 32 and record["distillation"]["text"].startswith("Python")
    assert not checkpoint_dir(tmp_path / "d").exists()


@pytest.mark.parametrize("how", ["killed mid-step", "Ctrl-C"])
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(teacher, tmp_path, monkeypatch, how):
    """Killed mid-step: the last periodic checkpoint (one after each step here) is where it resumes. Ctrl-C:
    the step under way finishes and is checkpointed (no periodic checkpoint is due)."""
    args = dict(tokens=6144, lr=1e-3, checkpoint_seconds=0.0 if how == "killed mid-step" else 3600.0)  # 12 steps
    _compress(teacher, tmp_path / "whole", "mlp", **args)
    real_batch = distill_module._batch

    def interrupted(windows, step, batch, seed):
        if step == 7:
            if how == "Ctrl-C":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt
        return real_batch(windows, step, batch, seed)

    monkeypatch.setattr(distill_module, "_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _compress(teacher, tmp_path / "resumed", "mlp", **args)
    assert not (tmp_path / "resumed").exists() and checkpoint_dir(tmp_path / "resumed").is_dir()
    monkeypatch.setattr(distill_module, "_batch", real_batch)
    record = _compress(teacher, tmp_path / "resumed", "mlp", **args)
    assert record["distillation"]["resumed_at_step"] == (7 if how == "killed mid-step" else 8)
    whole, resumed = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "resumed"))
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
    assert not checkpoint_dir(tmp_path / "resumed").exists()


def _cli(capsys, *args) -> tuple[int, str]:
    try:
        code = cli_main([str(a) for a in args])
    except SystemExit as e:  # argparse's refusal
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--params", "0"], ["--params", "1.5"], ["--params", "-0.3"],
                                   ["--size-budget", "0"], ["--params", "0.7", "--prune", "width"]])
def test_bad_targets_are_refused_in_one_line(teacher, tmp_path, capsys, flags):
    code, err = _cli(capsys, "compress", teacher, "--out", tmp_path / "o", *flags)
    assert code in (1, 2) and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_non_model_and_a_used_out_are_refused_in_one_line(teacher, tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    for source, out, says in [(tmp_path / "nothing", tmp_path / "o", "no such file"),
                              (tmp_path / "notes", tmp_path / "o", "not a Hugging Face model folder"),
                              (teacher, tmp_path / "notes", "not a luodi compressed model folder"),
                              ("tiny-gpt2", tmp_path / "o", "prunes Llama-family models")]:
        code, err = _cli(capsys, "compress", source, "--out", out, "--params", "0.7")
        assert code == 1 and err.count("\n") == 1 and says in err, err
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine" and not (tmp_path / "o").exists()


def test_a_run_larger_than_memory_is_refused_before_it_starts(teacher, tmp_path, capsys):
    code, err = _cli(capsys, "compress", teacher, "--out", tmp_path / "o", "--params", "0.7", "--distill-tokens",
                     "1000", "--distill-batch", "1000000", "--distill-seq", "128")
    assert code == 1 and err.count("\n") == 1 and "GiB is available" in err
    assert not (tmp_path / "o").exists() and not checkpoint_dir(tmp_path / "o").exists()


def test_a_size_budget_and_a_time_budget(teacher, tmp_path):
    record = _compress(teacher, tmp_path / "s", "mlp", params=None, size_budget_mb=0.6, minutes=0.02, lr=1e-3)
    assert record["params"]["compressed"] * 4 <= 0.6e6 < record["params"]["original"] * 4
    assert record["model_bytes"] == (tmp_path / "s" / "model.safetensors").stat().st_size
    assert record["distillation"]["steps"] >= 1 and record["distillation"]["minutes"] == 0.02
