"""Weight quantization for the ort target (MatMulNBits through onnxruntime's quantizer, int8 embedding
table) and `luodi eval`, on tiny random models, where no quantization grid flatters the numbers."""

import math

import numpy as np
import onnx_ir as ir
import pytest

import luodi
from luodi.errors import LuodiError
from luodi.evaluate import evaluate_text, text_ids
from luodi.exporters import export_model
from luodi.manifest import read_manifest
from luodi.passes.embedding_int8 import EmbeddingInt8

from test_parity import _max_diff

TEXT = "/usr/share/common-licenses/Apache-2.0"  # any English text on the machine


def _bytes(folder):
    """Bytes of the model files (graph and weights) an export folder holds."""
    return sum(e.bytes for n, e in read_manifest(folder).files.items() if n.startswith("model.onnx"))


def test_every_matmul_becomes_matmulnbits_and_files_shrink(quantized, export_dir):
    fp32 = _bytes(export_dir("tiny-qwen2"))
    sizes = {}
    for precision in ("int8", "int4"):
        info = read_manifest(quantized(precision)).quantization
        assert info["matmuls_kept"] == 0 and info["matmuls_quantized"] == 2 * 2 + 2 * 2 + 1  # qkv,o,gate_up,down,head
        assert info["shared_embedding"] is True  # the tied lookup reads the head's 4- or 8-bit weight
        sizes[precision] = _bytes(quantized(precision))
    assert sizes["int4"] < sizes["int8"] < fp32


def test_int8_is_closer_to_transformers_than_int4(quantized, reference):
    errors = {p: _max_diff("tiny-qwen2", lambda name, p=p: quantized(p), reference) for p in ("int8", "int4")}
    assert errors["int8"] < errors["int4"] and errors["int8"] < 0.05


@pytest.mark.parametrize("method", ["hqq", "gptq"])
def test_other_methods_stay_close_to_fp32(method, quantized, reference, tmp_path):
    settings = {"method": method}
    if method == "gptq":
        lm = luodi.load(quantized("int8"))  # any export's tokenizer encodes the calibration text
        settings["calibration"] = tuple(lm.tokenizer.encode(open(TEXT).read())[:512])
    folder = quantized("int4", **settings)
    info = read_manifest(folder).quantization
    assert info["method"] == method
    assert info["shared_embedding"] is True  # the LM head's table serves the lookup (gptq names it W_Q4G32)
    assert _max_diff("tiny-qwen2", lambda name: folder, reference) < 1.0


def test_bad_quantization_settings_are_refused(tmp_path):
    cases = [({"group_size": 48}, "power of two"), ({"group_size": 128}, "does not divide"),
             ({"method": "gptq"}, "calibration text"), ({"method": "hqq", "bits": 8}, "4 bits")]
    for settings, message in cases:
        with pytest.raises(LuodiError, match=message):
            export_model("tiny-qwen2", precision="int4", out=tmp_path / "x", progress=False, quantization=settings)
        assert not (tmp_path / "x").exists()
    openvino = [("int4", {"method": "hqq"}, "not available for openvino"),
                ("int4", {"keep": ("lm_head",)}, "does not take keep"),
                ("int4", {"method": "awq"}, "calibration text"),
                ("int8", {"method": "awq", "calibration": (1, 2, 3)}, "int4 only"),
                ("fp16", {"method": "awq"}, "apply to the int4/int8 precisions")]
    for precision, settings, message in openvino:
        with pytest.raises(LuodiError, match=message):
            export_model("tiny-qwen2", target="openvino", precision=precision, out=tmp_path / "y", progress=False,
                         quantization=settings)
        assert not (tmp_path / "y").exists()


@pytest.mark.parametrize("method", ["awq", "gptq"])
def test_openvino_data_aware_compression(method, export_dir, reference, tmp_path):
    """NNCF's AWQ (+ scale estimation) and GPTQ on calibration text, through the stateful IR."""
    ids = tuple(luodi.load(export_dir("tiny-llama")).tokenizer.encode(open(TEXT).read())[:1024])
    folder = export_model("tiny-llama", target="openvino", precision="int4", out=tmp_path / method, progress=False,
                          quantization={"method": method, "calibration": ids, "group_size": 32})
    record = read_manifest(folder).openvino["compression"]
    assert record["method"] == method and record["calibration_tokens"] == len(ids) and record["group_size"] == 32
    assert _max_diff("tiny-llama", lambda name: folder, reference) < 1.0


def test_int8_embedding_lookup_keeps_the_numbers(traced_model):
    before, after = ir.load(traced_model), ir.load(traced_model)
    graph_pass = EmbeddingInt8()
    graph_pass(after)
    assert graph_pass.count == 1
    table = next(v for v in after.graph.initializers.values() if v.name.endswith(".int8"))
    assert table.const_value.numpy().dtype == np.int8
    from passes.graphs import run, traced_feeds

    got, want = run(after, traced_feeds())[0], run(before, traced_feeds())[0]
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max()


@pytest.fixture(scope="session")
def traced_model(tmp_path_factory):
    out = export_model("tiny-llama", out=tmp_path_factory.mktemp("t") / "t", passes="cleanup", progress=False)
    return out / "model.onnx"


def test_eval_perplexity_matches_the_reference_backend(export_dir):
    folder = export_dir("tiny-llama")
    lm, torch_lm = luodi.load(folder), luodi.load("tiny-llama", backend="torch")
    ids, opening = text_ids(lm.tokenizer, open(TEXT).read())
    got = evaluate_text(lm, ids, window=64, max_tokens=200, reference=torch_lm, opening=opening)
    want = evaluate_text(torch_lm, ids, window=64, max_tokens=200, opening=opening)
    assert opening == [lm.tokenizer.token_id("<s>")]  # each window opens with the BOS: every text token scored
    assert got["tokens_scored"] == want["tokens_scored"] == 200 and got["windows"] == 4
    assert got["perplexity"] == pytest.approx(want["perplexity"], rel=1e-4)
    assert got["top1_agreement"] == 1.0


def test_eval_windows_open_with_the_bos_as_transformers_scores_them(reference):
    """The perplexity eval reports is transformers' own over windows [BOS] + the next 63 text tokens."""
    import torch

    model, tok = reference("tiny-llama")
    lm = luodi.load("tiny-llama", backend="torch")
    ids, opening = text_ids(lm.tokenizer, open(TEXT).read())
    assert ids == tok(open(TEXT).read(), add_special_tokens=False)["input_ids"] and opening == [tok.bos_token_id]
    nll = []
    for i in range(0, 150, 63):
        window = torch.tensor([[tok.bos_token_id, *ids[i:min(i + 63, 150)]]])
        with torch.no_grad():
            logp = torch.log_softmax(model(window).logits[0, :-1].double(), -1)
        nll.append(-logp[torch.arange(window.shape[1] - 1), window[0, 1:]])
    want = math.exp(torch.cat(nll).mean().item())
    got = evaluate_text(lm, ids, window=64, max_tokens=150, opening=opening)
    assert got["tokens_scored"] == 150 and got["perplexity"] == pytest.approx(want, rel=1e-5)


def test_eval_cli_and_its_bad_input(quantized, export_dir, tmp_path):
    from luodi.cli import main

    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert main(["eval", str(quantized("int8")), "--text", str(empty)]) == 1
    assert main(["eval", str(quantized("int8")), "--text", str(tmp_path / "missing.txt")]) == 1
    assert main(["eval", str(quantized("int8")), "--text", TEXT, "--max-tokens", "100", "--window", "50",
                 "--reference", str(export_dir("tiny-qwen2"))]) == 0


@pytest.mark.parametrize("bits,method", [(4, "rtn"), (4, "minmax"), (8, "rtn")])
def test_tied_embedding_reads_the_lm_head_weight(bits, method, quantized, export_dir):
    """The token lookup of an int4 or int8 export with tied embeddings is GatherBlockQuantized over the LM
    head's MatMulNBits weight: no int8 table in the file, and it returns the LM head's dequantized rows
    (minmax: with the block offsets its lowering added)."""
    import onnx
    import onnxruntime as ort

    from luodi.quantization.half_scales import HALF_RTOL
    from luodi.quantization.rtn import fake_quantize, fake_quantize_minmax
    from luodi.runtimes.embedding_table import EmbeddingTable

    folder = quantized(f"int{bits}", method=method)
    assert read_manifest(folder).quantization["shared_embedding"] is True
    model = onnx.load(folder / "model.onnx")
    (lookup,) = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized"]
    rows_name = lookup.output[0].removesuffix("/centred")
    assert not [i.name for i in model.graph.initializer if i.name.endswith(".int8")]
    model.graph.output.append(onnx.helper.make_tensor_value_info(rows_name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 5, 17, 99]], dtype=np.int64)
    feeds = {i.name: np.zeros((1, i.shape[1], 4, i.shape[3]), np.float32)  # the shared buffer: 4 slots
             for i in session.get_inputs() if i.name.startswith("past")}
    feeds |= {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(4)[None]}
    feeds = {k: v for k, v in feeds.items() if k in {i.name for i in session.get_inputs()}}
    rows = session.run([rows_name], feeds)[0]
    fp32 = export_dir("tiny-qwen2")
    entry = read_manifest(fp32).embedding_table  # the fp32 export's tied table, as its runtime reads it
    table = EmbeddingTable(fp32, entry)(np.arange(entry.shape[0])).T  # [hidden, vocab]
    grid = fake_quantize_minmax if method == "minmax" else fake_quantize
    # the head's scales (and offsets) are stored as fp16: the rows are the grid's up to that rounding
    np.testing.assert_allclose(rows[0], grid(table, bits, 32)[:, ids[0]].T, rtol=0,
                               atol=2 * HALF_RTOL * np.abs(table).max())


def test_minmax_runs_on_integer_zero_point_kernels(quantized, reference):
    """--method minmax stores each block's own range with a float zero point; every MatMulNBits is lowered to
    integer zero points plus block offsets (no float zero points left), and the model stays close to fp32."""
    import onnx

    folder = quantized("int4", method="minmax")
    info = read_manifest(folder).quantization
    assert info["method"] == "minmax" and info["float_zero_points_lowered"] == info["matmuls_quantized"] == 9
    assert info["matmuls_kept"] == 0
    model = onnx.load(folder / "model.onnx", load_external_data=False)
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert {len(n.input) for n in nbits} == {3}  # no zero points: the centre is MatMulNBits' default
    assert {onnx.helper.get_attribute_value(a) for n in nbits for a in n.attribute if a.name == "accuracy_level"} \
        == {read_manifest(folder).quantization["accuracy_level"]}
    assert _max_diff("tiny-qwen2", lambda name: folder, reference) < 1.0


def test_float_zero_point_lowering_keeps_the_product():
    """A MatMulNBits with float zero points (HQQ's layout) computes the same product before and after its
    lowering to centred integer zero points plus block offsets, both equal to the dequantized weight's."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from luodi.quantization.float_zero_points import lower_float_zero_points

    rng = np.random.default_rng(0)
    k, n, block = 96, 40, 32
    q = rng.integers(0, 16, (n, k))
    scales = rng.uniform(0.01, 0.1, (n, k // block)).astype(np.float32)
    zeros = rng.uniform(0, 15, (n, k // block)).astype(np.float32)
    packed = (q[:, 0::2] | q[:, 1::2] << 4).astype(np.uint8).reshape(n, k // block, block // 2)
    weight = (q - np.repeat(zeros, block, axis=1)) * np.repeat(scales, block, axis=1)  # [N, K]
    inits = [numpy_helper.from_array(packed, "w_Q4"), numpy_helper.from_array(scales.reshape(-1), "w_scales"),
             numpy_helper.from_array(zeros.reshape(-1), "w_zero_points")]
    node = helper.make_node("MatMulNBits", ["x", "w_Q4", "w_scales", "w_zero_points"], ["y"], name="mm",
                            domain="com.microsoft", K=k, N=n, bits=4, block_size=block)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "s", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "s", n])], inits)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    x = rng.standard_normal((1, 3, k)).astype(np.float32)

    def run():
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    before = run()
    assert lower_float_zero_points(model) == {"w_Q4": "w_Q4.offsets"}
    after = run()
    (lowered,) = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert list(lowered.input) == ["x", "w_Q4", "w_scales"]
    assert "w_zero_points" not in {i.name for i in model.graph.initializer}
    np.testing.assert_allclose(before, x @ weight.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(after, x @ weight.T, rtol=1e-4, atol=1e-4)
    onnx.checker.check_model(model)


def test_lowered_constant_blocks_are_exact_on_int8_activations():
    """A block of one level (a zero row, as a padding token's tied embedding) becomes its offset alone: with
    accuracy_level 4 (int8 activations) a zero row still gives exactly 0, and a constant one its value times
    the input's sum, where the centred form's two terms would leave the activations' rounding, times 8."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from luodi.quantization.float_zero_points import lower_float_zero_points

    rng = np.random.default_rng(1)
    k, n, block = 64, 4, 32
    q = rng.integers(0, 16, (n, k))
    q[1] = 0  # with zero point 0: a zero row
    q[2] = 5  # a constant row, 5 levels above its zero point
    scales = np.ones((n, k // block), np.float32)
    zeros = np.zeros((n, k // block), np.float32)
    packed = (q[:, 0::2] | q[:, 1::2] << 4).astype(np.uint8).reshape(n, k // block, block // 2)
    inits = [numpy_helper.from_array(packed, "w_Q4"), numpy_helper.from_array(scales.reshape(-1), "w_scales"),
             numpy_helper.from_array(zeros.reshape(-1), "w_zero_points")]
    node = helper.make_node("MatMulNBits", ["x", "w_Q4", "w_scales", "w_zero_points"], ["y"], name="mm",
                            domain="com.microsoft", K=k, N=n, bits=4, block_size=block, accuracy_level=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    lower_float_zero_points(model)
    x = rng.standard_normal((1, k)).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert y[0, 1] == 0.0
    np.testing.assert_allclose(y[0, 2], 5 * x.sum(), rtol=1e-5)


def test_untied_embeddings_keep_their_int8_table(tmp_path):
    folder = export_model("tiny-llama", precision="int4", out=tmp_path / "untied", progress=False)
    assert read_manifest(folder).quantization["shared_embedding"] is False


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma2"])
def test_keep_lm_head_finds_it_behind_a_final_softcap(name, tmp_path):
    """--keep lm_head keeps the MatMul making the logits at int8, also where a final soft-capping (Gemma 2)
    follows it, so the logits output is no MatMul's."""
    import onnx

    folder = export_model(name, precision="int4", out=tmp_path / name, progress=False,
                          quantization={"keep": ("lm_head",)})
    info = read_manifest(folder).quantization
    (head,) = info["kept_int8"]
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    kept = next(n for n in graph.node if n.name == f"{head}_Q8")  # onnxruntime's quantizer names it so
    assert kept.op_type == "MatMulNBits" and {a.name: a.i for a in kept.attribute}["bits"] == 8
    if name == "tiny-gemma2":
        assert "logits" not in kept.output  # the soft-capping's Tanh and Muls come after it


class _Tokenizer:
    """One id per word; `bos` is prepended when special tokens are asked for (as Gemma's tokenizer does)."""

    def __init__(self, bos):
        self.bos = bos

    def encode(self, text, add_special_tokens=True):
        ids = [10 + i for i, _ in enumerate(text.split())]
        return ([self.bos] if add_special_tokens and self.bos is not None else []) + ids


@pytest.mark.parametrize("bos", [2, None])
def test_every_calibration_window_opens_as_a_text_does(bos):
    from luodi.quantization.calibration import WINDOW, calibration_ids, prefill_windows

    text = " ".join(["word"] * 300)
    ids = calibration_ids(_Tokenizer(bos), text)
    windows = [w["input_ids"][0].tolist() for w in prefill_windows(ids)]
    plain = _Tokenizer(None).encode(text)
    if bos is None:
        assert list(ids) == plain  # a tokenizer that adds nothing: the text's ids unchanged
    else:
        assert all(w[0] == bos and bos not in w[1:] for w in windows) and len(windows[0]) == WINDOW
        assert [t for w in windows for t in w[1:]] == plain  # every text token once, in order


@pytest.mark.parametrize("bos", [2, None])
def test_every_short_window_of_the_mixed_precision_probe_opens_as_a_text_does(bos):
    from luodi.quantization.calibration import WINDOW, calibration_ids, prefill_windows, short_windows_feed

    text = " ".join(["word"] * (20 * WINDOW))
    feed = short_windows_feed(prefill_windows(calibration_ids(_Tokenizer(bos), text)), size=8, rows=16)
    ids = feed["input_ids"]
    assert ids.shape == (16, 8) and (feed["position_ids"] == np.arange(8)).all()
    if bos is None:
        assert ids[:, 0].tolist() == [10 + i * WINDOW for i in range(16)]  # each window's own first text token
    else:
        assert (ids[:, 0] == bos).all() and not (ids[:, 1:] == bos).any()


def test_a_calibration_text_too_short_for_the_probe_is_a_clear_error():
    from luodi.quantization.calibration import calibration_ids, prefill_windows, short_windows_feed

    with pytest.raises(LuodiError, match="too short"):
        short_windows_feed(prefill_windows(calibration_ids(_Tokenizer(2), "one two three")), size=8)
