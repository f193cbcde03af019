"""Small graphs for the pass tests, and a runner that compares a graph before and after a pass."""

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HIDDEN = 8


def const(name, array):
    """An initializer from a numpy array (float32 unless it is an integer array)."""
    array = np.asarray(array)
    return numpy_helper.from_array(array if array.dtype.kind in "iu" else array.astype(np.float32), name)


def model(nodes, inputs, outputs, initializers, opset=18):
    """An onnx_ir.Model from helper-made nodes; inputs/outputs are (name, shape) pairs of float tensors."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def run(m, feeds):
    """Outputs of an onnx_ir.Model under ONNX Runtime CPU (weights in external files are read in first)."""
    proto = ir.to_proto(ir.external_data.load_to_model(m))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def apply_and_compare(graph_pass, make, feeds, atol=1e-5):
    """Run a pass on a fresh copy of a graph; return (match count, op types after); assert outputs unchanged."""
    want = run(make(), feeds)
    m = make()
    graph_pass(m)
    got = run(m, feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=atol, rtol=1e-5)
    return graph_pass.count, [n.op_type for n in m.graph]


def rms_norm_nodes(x, out, weight, two="two", axes="axes", prefix="n"):
    """x * (1 / sqrt(mean(x^2) + eps)) * weight, as the canonical decoder traces it."""
    p = prefix
    return [helper.make_node("Pow", [x, two], [f"{p}.sq"]),
            helper.make_node("ReduceMean", [f"{p}.sq", axes], [f"{p}.mean"], keepdims=1),
            helper.make_node("Add", [f"{p}.mean", "eps"], [f"{p}.var"]),
            helper.make_node("Sqrt", [f"{p}.var"], [f"{p}.std"]),
            helper.make_node("Reciprocal", [f"{p}.std"], [f"{p}.inv"]),
            helper.make_node("Mul", [x, f"{p}.inv"], [f"{p}.normed"]),
            helper.make_node("Mul", [f"{p}.normed", weight], [out])]


def norm_constants(rng):
    """The constants rms_norm_nodes uses, plus a weight vector 'w'."""
    return [const("two", np.array(2.0)), const("axes", np.array([-1], dtype=np.int64)),
            const("eps", np.array(1e-6)), const("w", rng.standard_normal(HIDDEN))]


def traced_feeds(batch=2, seq=5, past=3, padded=True):
    """Inputs for the traced tiny Llama (2 layers, 2 KV heads of 16): `past` cached positions, `seq` new ones,
    the second row left-padded by two positions unless padded=False."""
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 300, (batch, seq)), "attention_mask": np.ones((batch, past + seq), np.int64),
             "position_ids": np.tile(np.arange(past, past + seq), (batch, 1))}
    if padded:
        feeds["attention_mask"][1, :2] = 0
    for i in range(2):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = rng.standard_normal((batch, 2, past, 16)).astype(np.float32)
    return feeds


def apply_to_traced(path, graph_pass, mutate=None, feeds=None):
    """Run a pass on the traced graph at `path` (after `mutate`, applied to both copies); assert every output
    unchanged on `feeds` (default traced_feeds()); return (match count, op types after)."""
    before, after = ir.load(path), ir.load(path)
    if mutate:
        mutate(before)
        mutate(after)
    graph_pass(after)
    for feed in feeds or [traced_feeds()]:
        for got, want in zip(run(after, feed), run(before, feed)):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    return graph_pass.count, [n.op_type for n in after.graph]


class Pipeline:
    """Several passes as one (for apply_to_traced): the count is the last pass's."""

    def __init__(self, *passes):
        self.passes, self.count = passes, 0

    def __call__(self, model):
        for graph_pass in self.passes:
            graph_pass(model)
        self.count = getattr(self.passes[-1], "count", 0)
