"""fuse_gelu, pack_matmuls and last_token_logits on small graphs."""

import math

import numpy as np
from onnx import helper

from luodi.passes.fuse_gelu import FuseGelu
from luodi.passes.last_token_logits import LastTokenLogits
from luodi.passes.pack_matmuls import PackMatMuls

from .graphs import HIDDEN, apply_and_compare, const, model, run

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


def test_last_token_logits_keeps_the_last_row():
    full = run(_head(), {"h": X})[0]
    m = _head()
    graph_pass = LastTokenLogits()
    graph_pass(m)
    last = run(m, {"h": X})[0]
    assert graph_pass.count == 1 and last.shape == (2, 1, 11)
    np.testing.assert_allclose(last[:, 0], full[:, -1], atol=1e-6)
