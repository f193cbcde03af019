"""fuse_gelu, fuse_silu, embedding_gather, pack_matmuls, last_token_logits, embedding_rows and lm_head_view on
small graphs."""

import math

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from luodi.exporters.onnx_export import save_onnx
from luodi.passes.base import weight_bytes
from luodi.passes.embedding_gather import EmbeddingGather
from luodi.passes.embedding_rows import EmbeddingRows
from luodi.passes.fuse_gelu import FuseGelu
from luodi.passes.fuse_silu import FuseSilu
from luodi.passes.last_token_logits import LastTokenLogits
from luodi.passes import lm_head_view
from luodi.passes.lm_head_view import LmHeadView
from luodi.passes.pack_matmuls import PackMatMuls

from .graphs import HIDDEN, apply_and_compare, const, model, run
from luodi.contract.graph import STEP_WINDOW

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, HIDDEN)).astype(np.float32)
SHAPE = ["b", "s", HIDDEN]


def _gelu(c=0.044715):
    nodes = [helper.make_node("Pow", ["x", "three"], ["cube"]), helper.make_node("Mul", ["c", "cube"], ["t1"]),
             helper.make_node("Add", ["x", "t1"], ["t2"]), helper.make_node("Mul", ["k", "t2"], ["t3"]),
             helper.make_node("Tanh", ["t3"], ["t4"]), helper.make_node("Add", ["t4", "one"], ["t5"]),
             helper.make_node("Mul", ["half", "t5"], ["t6"]), helper.make_node("Mul", ["x", "t6"], ["y"])]
    inits = [const("three", np.array(3.0)), const("c", np.array(c)), const("k", np.array(math.sqrt(2 / math.pi))),
             const("one", np.array(1.0)), const("half", np.array(0.5))]
    return model(nodes, [("x", SHAPE)], [("y", SHAPE)], inits)


def test_gelu_fuses():
    count, ops = apply_and_compare(FuseGelu(), _gelu, {"x": X})
    assert count == 1 and ops == ["FastGelu"]


def test_gelu_with_other_constants_is_left_alone():
    assert apply_and_compare(FuseGelu(), lambda: _gelu(c=0.05), {"x": X})[0] == 0


def _projections(weights_as_input=False):
    rng = np.random.default_rng(4)
    names = ["wq", "wk", "wv"]
    nodes = [helper.make_node("MatMul", ["x", w], [f"{w}.out"]) for w in names]
    nodes.append(helper.make_node("Concat", [f"{w}.out" for w in names], ["y"], axis=-1))
    widths = [HIDDEN, 4, 4]
    inits = [const(w, rng.standard_normal((HIDDEN, n))) for w, n in zip(names, widths)]
    inputs = [("x", SHAPE)]
    if weights_as_input:
        inputs.append(("wq", [HIDDEN, HIDDEN]))
        inits = inits[1:]
    return model(nodes, inputs, [("y", ["b", "s", sum(widths)])], inits)


def test_pack_matmuls_packs_projections_of_one_input():
    count, ops = apply_and_compare(PackMatMuls(), _projections, {"x": X})
    assert count == 1 and ops.count("MatMul") == 1 and "Split" in ops


def test_pack_matmuls_packs_only_constant_weights():
    feeds = {"x": X, "wq": RNG.standard_normal((HIDDEN, HIDDEN)).astype(np.float32)}
    count, ops = apply_and_compare(PackMatMuls(), lambda: _projections(weights_as_input=True), feeds)
    assert count == 1 and ops.count("MatMul") == 2  # wk and wv packed; wq (a graph input) stays apart


def _head():
    nodes = [helper.make_node("MatMul", ["h", "w"], ["logits"])]
    return model(nodes, [("h", SHAPE)], [("logits", ["b", "s", 11])],
                 [const("w", np.random.default_rng(5).standard_normal((HIDDEN, 11)))])


def test_last_token_logits_keeps_a_short_steps_rows_and_a_prefills_last():
    m = _head()
    graph_pass = LastTokenLogits()
    graph_pass(m)
    assert graph_pass.count == 1
    for seq in (1, 3, STEP_WINDOW + 5):  # a decode step, a speculative step, a prefill longer than the window
        h = RNG.standard_normal((2, seq, HIDDEN)).astype(np.float32)
        full, kept = run(_head(), {"h": h})[0], run(m, {"h": h})[0]
        assert kept.shape == (2, seq if seq <= STEP_WINDOW else 1, 11)
        np.testing.assert_allclose(kept, full[:, -kept.shape[1]:], atol=1e-6)


def _silu(swapped=False, other_input=False):
    gate = "y" if other_input else "x"
    operands = ["sig", gate] if swapped else [gate, "sig"]
    nodes = [helper.make_node("Sigmoid", ["x"], ["sig"]), helper.make_node("Mul", operands, ["out"])]
    return model(nodes, [("x", SHAPE), ("y", SHAPE)], [("out", SHAPE)], [])


def test_silu_fuses_in_either_operand_order():
    for swapped in (False, True):
        count, ops = apply_and_compare(FuseSilu(), lambda: _silu(swapped), {"x": X, "y": X + 1})
        assert count == 1 and ops == ["QuickGelu"]


def test_gated_product_is_not_silu():
    count, ops = apply_and_compare(FuseSilu(), lambda: _silu(other_input=True), {"x": X, "y": X + 1})
    assert count == 0 and ops == ["Sigmoid", "Mul"]


def _column_lookup(reshape_to_ids=True):
    """Token ids looked up as columns of a [hidden, vocab] table, as the canonical decoder traces it."""
    nodes = [helper.make_node("Reshape", ["ids", "flat"], ["flat_ids"]),
             helper.make_node("Gather", ["table", "flat_ids"], ["columns"], axis=1),
             helper.make_node("Transpose", ["columns"], ["rows"], perm=[1, 0]),
             helper.make_node("Reshape", ["rows", "shape"], ["out"])]
    shape = [2, 3, HIDDEN] if reshape_to_ids else [3, 2, HIDDEN]
    inits = [const("flat", np.array([-1], dtype=np.int64)), const("shape", np.array(shape, dtype=np.int64)),
             const("table", np.random.default_rng(6).standard_normal((HIDDEN, 50)))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def test_embedding_column_lookup_becomes_one_gather():
    ids = np.random.default_rng(7).integers(0, 50, (2, 3))
    count, ops = apply_and_compare(EmbeddingGather(), _column_lookup, {"ids": ids})
    assert count == 1 and ops == ["Gather", "Transpose"]


def test_lookup_reshaped_to_other_than_the_ids_is_left_alone():
    ids = np.random.default_rng(7).integers(0, 50, (2, 3))
    count, _ = apply_and_compare(EmbeddingGather(), lambda: _column_lookup(reshape_to_ids=False), {"ids": ids})
    assert count == 0


def _tied_head(other_reader=False):
    """A tied table: token columns looked up (Gather axis 1) and the logits MatMul, both on [hidden, vocab]."""
    nodes = [helper.make_node("Gather", ["table", "ids"], ["columns"], axis=1),
             helper.make_node("Transpose", ["columns"], ["x"], perm=[1, 2, 0]),
             helper.make_node("MatMul", ["x", "table"], ["logits"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 3, 50])]
    if other_reader:
        nodes.append(helper.make_node("Relu", ["table"], ["relu"]))
        outputs.append(helper.make_tensor_value_info("relu", TensorProto.FLOAT, [HIDDEN, 50]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])], outputs,
                              [const("table", np.random.default_rng(8).standard_normal((HIDDEN, 50)))])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def _rows_then_view():
    m = _tied_head()
    EmbeddingRows()(m)
    return m


@pytest.mark.parametrize("chunk_bytes, views", [(1 << 20, 1), (HIDDEN * 4 * 16, 4)])
def test_tied_head_reads_views_of_the_stored_rows(tmp_path, monkeypatch, chunk_bytes, views):
    monkeypatch.setattr(lm_head_view, "CHUNK_BYTES", chunk_bytes)  # 50 rows of 32 bytes: one view, or four
    ids = np.random.default_rng(9).integers(0, 50, (2, 3))
    count, ops = apply_and_compare(LmHeadView(), _rows_then_view, {"ids": ids})
    assert count == 1 and ops == ["Gather"] + ["FusedMatMul"] * views + ["Concat"] * (views > 1)
    m = _rows_then_view()
    LmHeadView()(m)
    assert len(m.graph.initializers) == 1 + views and weight_bytes(m) == 50 * HIDDEN * 4
    path = save_onnx(m, tmp_path)  # stored once: the views name ranges of the table's bytes
    assert (tmp_path / "model.onnx.data").stat().st_size == 50 * HIDDEN * 4
    saved = ir.load(path)
    assert weight_bytes(saved) == 50 * HIDDEN * 4
    table = saved.graph.initializers["table.rows"].const_value.numpy()
    parts = [saved.graph.initializers[f"table.rows.lm_head.{i}"].const_value.numpy() for i in range(views)]
    np.testing.assert_array_equal(np.concatenate(parts), table)  # consecutive row ranges, read back from the file
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"ids": ids})[0], run(_tied_head(), {"ids": ids})[0], rtol=1e-6)


def test_head_without_transposed_rows_is_left_alone():
    ids = np.random.default_rng(9).integers(0, 50, (2, 3))
    assert apply_and_compare(LmHeadView(), _tied_head, {"ids": ids})[0] == 0  # embedding_rows has not run


def test_tied_table_becomes_rows_for_lookup_and_head():
    ids = np.random.default_rng(9).integers(0, 50, (2, 3))
    count, ops = apply_and_compare(EmbeddingRows(), _tied_head, {"ids": ids})
    assert count == 1 and ops == ["Gather", "Transpose", "MatMul"]  # row lookup; the head reads Transpose(rows)
    m = _tied_head()
    EmbeddingRows()(m)
    assert [list(v.shape) for v in m.graph.initializers.values()] == [[50, HIDDEN]]


def test_tied_table_read_by_other_ops_keeps_its_layout():
    ids = np.random.default_rng(9).integers(0, 50, (2, 3))
    assert apply_and_compare(EmbeddingRows(), lambda: _tied_head(other_reader=True), {"ids": ids})[0] == 0
