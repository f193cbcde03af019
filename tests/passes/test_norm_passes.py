"""fuse_rms_norm and fuse_skip_norm on small graphs: they match what they should, keep the numbers, and
leave alone what they must not fuse."""

import numpy as np
from onnx import helper

from luodi.passes.fuse_rms_norm import FuseRmsNorm
from luodi.passes.fuse_skip_norm import FuseSkipNorm

from .graphs import HIDDEN, apply_and_compare, const, model, norm_constants, rms_norm_nodes

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, HIDDEN)).astype(np.float32)
Y = RNG.standard_normal((2, 3, HIDDEN)).astype(np.float32)
SHAPE = ["b", "s", HIDDEN]


def _rms(axes=(-1,), exponent=2.0):
    inits = norm_constants(np.random.default_rng(1))
    inits[0] = const("two", np.array(exponent))
    inits[1] = const("axes", np.array(list(axes), dtype=np.int64))
    return model(rms_norm_nodes("x", "y", "w"), [("x", SHAPE)], [("y", SHAPE)], inits)


def test_rms_norm_fuses():
    count, ops = apply_and_compare(FuseRmsNorm(), _rms, {"x": X})
    assert count == 1 and ops == ["SimplifiedLayerNormalization"]


def test_rms_norm_leaves_other_axes_and_powers():
    assert apply_and_compare(FuseRmsNorm(), lambda: _rms(axes=(1,)), {"x": X})[0] == 0
    assert apply_and_compare(FuseRmsNorm(), lambda: _rms(exponent=3.0), {"x": X})[0] == 0


def _skip(broadcast=False):
    skip_shape = [HIDDEN] if broadcast else SHAPE
    nodes = [helper.make_node("Add", ["x", "y"], ["sum"]), *rms_norm_nodes("sum", "normed", "w"),
             helper.make_node("Mul", ["sum", "normed"], ["out"])]  # the residual sum is used again
    m = model(nodes, [("x", SHAPE), ("y", skip_shape)], [("out", SHAPE)], norm_constants(np.random.default_rng(2)))
    FuseRmsNorm()(m)
    return m


def test_skip_rms_norm_fuses_and_keeps_the_sum():
    count, ops = apply_and_compare(FuseSkipNorm(), _skip, {"x": X, "y": Y})
    assert count == 1 and ops == ["SkipSimplifiedLayerNormalization", "Mul"]


def test_skip_norm_leaves_broadcasting_adds():
    count, ops = apply_and_compare(FuseSkipNorm(), lambda: _skip(broadcast=True), {"x": X, "y": Y[0, 0]})
    assert count == 0 and "Add" in ops


def _skip_layer_norm():
    nodes = [helper.make_node("Add", ["x", "y"], ["sum"]),
             helper.make_node("LayerNormalization", ["sum", "w", "b"], ["out"], axis=-1, epsilon=1e-5)]
    rng = np.random.default_rng(3)
    return model(nodes, [("x", SHAPE), ("y", SHAPE)], [("out", SHAPE)],
                 [const("w", rng.standard_normal(HIDDEN)), const("b", rng.standard_normal(HIDDEN))])


def test_skip_layer_norm_fuses():
    count, ops = apply_and_compare(FuseSkipNorm(), _skip_layer_norm, {"x": X, "y": Y})
    assert count == 1 and ops == ["SkipLayerNormalization"]
