"""Time only the weight products of ONNX graphs: the floor of a decode or verifying step.

Builds, for each graph, a graph of just its products with constant weights (MatMulNBits for int4/int8 exports;
MatMul and FusedMatMul with an initializer as the weight for fp32 ones), with the nodes that compute their
constant inputs (as a Cast of fp16 scales), each fed its own input of P positions, and times it with ONNX
Runtime on the CPU. Beside a whole step of the same graph (scripts/step_time_ab.py), it says how much of a
step the weights' kernels take, which no graph rewrite or runtime around them can remove: if one graph's
kernels alone take 0.85 of another's whole step, the first cannot decode 1.25x faster than the other on those
kernels; if the kernels grow by 5 ms from 1 to 8 positions, a step verifying 7 drafts costs at least 5 ms more
than a plain one.
usage: python scripts/kernel_floor.py MODEL.onnx ... [--positions 1,8] [--threads 2] [--runs 200] [--rounds 3]
"""

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


def weight_product(node: onnx.NodeProto, initializers: dict) -> tuple[int, int] | None:
    """(K, N) of a product of an activation by constant weights: a MatMulNBits, or a MatMul / FusedMatMul whose
    weight is a 2-D initializer (FusedMatMul's transB read); None for any other node."""
    attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
    if node.op_type == "MatMulNBits":
        return attributes["K"], attributes["N"]
    weight = initializers.get(node.input[1]) if node.op_type in ("MatMul", "FusedMatMul") else None
    if weight is None or len(weight.dims) != 2 or attributes.get("transA", 0):
        return None
    k, n = weight.dims
    return (n, k) if attributes.get("transB", 0) else (k, n)


def kernel_graph(path: str) -> tuple[onnx.ModelProto, int]:
    """(a graph of the model's products with constant weights, each reading a [1, positions, K] input of its own;
    how many there are)."""
    model = onnx.load(path)
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    producers = {output: index for index, node in enumerate(model.graph.node) for output in node.output}
    nodes, inputs, outputs, constants, helpers = [], [], [], {}, set()
    products = [(node, shape) for node in model.graph.node if (shape := weight_product(node, initializers))]
    for index, (node, (k, n)) in enumerate(products):
        x, y = f"x{index}", f"y{index}"
        inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, "positions", k]))
        outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, "positions", n]))
        copy = helper.make_node(node.op_type, [x, *node.input[1:]], [y], domain=node.domain)
        copy.attribute.extend(node.attribute)
        nodes.append(copy)
        pending = [name for name in node.input[1:] if name]
        while pending:  # the constants it reads, and the nodes that compute them from initializers
            name = pending.pop()
            if name in initializers:
                constants[name] = initializers[name]
            elif name in producers and producers[name] not in helpers:
                helpers.add(producers[name])
                pending += [source for source in model.graph.node[producers[name]].input if source]
    ordered = [model.graph.node[index] for index in sorted(helpers)]  # in the model's (topological) order
    graph = helper.make_graph(ordered + nodes, "weight products only", inputs, outputs, list(constants.values()))
    result = helper.make_model(graph, opset_imports=model.opset_import)
    result.ir_version = model.ir_version
    return result, len(nodes)


def kernel_session(path: str, threads: int) -> tuple[ort.InferenceSession, int]:
    """(an ONNX Runtime CPU session of the model's weight products, how many there are)."""
    model, count = kernel_graph(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]), count


def time_run(session: ort.InferenceSession, positions: int, runs: int) -> float:
    """Median ms of one run on random inputs of this many positions (after a tenth of the runs as warm-up)."""
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal([1, positions, i.shape[2]]).astype(np.float32)
             for i in session.get_inputs()}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times[runs // 10:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--positions", default="1", help="comma-separated positions per step, e.g. 1,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="the graphs alternate this many times")
    args = parser.parse_args()
    positions = [int(p) for p in args.positions.split(",")]
    sessions = {path: kernel_session(path, args.threads) for path in args.models}
    for _ in range(args.rounds):
        for path, (session, count) in sessions.items():
            for p in positions:
                print(f"{path}: {count} weight products, {p} position(s), "
                      f"{time_run(session, p, args.runs):.2f} ms per run", flush=True)


if __name__ == "__main__":
    main()
