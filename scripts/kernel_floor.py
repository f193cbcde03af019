"""Time only the MatMulNBits nodes of ONNX graphs at one position: the floor of an int4/int8 decode step.

Builds, for each graph, a graph of just its MatMulNBits nodes (with the nodes that compute their constant
inputs, as a Cast of fp16 scales), each fed its own one-position input, and times it with ONNX Runtime on the CPU.
Beside a whole decode step of the same graphs (scripts/step_time_ab.py), it says how much of a step the
weights' kernel takes, which no graph rewrite or runtime around it can remove: if one graph's kernel alone
takes 0.85 of another's whole step, the first cannot decode 1.25x faster than the other on that kernel.
usage: python scripts/kernel_floor.py MODEL.onnx ... [--threads 2] [--runs 200] [--rounds 3]
"""

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


OP = "MatMulNBits"


def kernel_graph(path: str) -> tuple[onnx.ModelProto, int]:
    """(a graph of the model's MatMulNBits nodes, each reading a [1, 1, K] input of its own; how many there are)."""
    model = onnx.load(path)
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    producers = {output: index for index, node in enumerate(model.graph.node) for output in node.output}
    nodes, inputs, outputs, constants, helpers = [], [], [], {}, set()
    for index, node in enumerate(n for n in model.graph.node if n.op_type == OP):
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        x, y = f"x{index}", f"y{index}"
        inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 1, attributes["K"]]))
        outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 1, attributes["N"]]))
        copy = helper.make_node(OP, [x, *node.input[1:]], [y], domain=node.domain)
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
    graph = helper.make_graph(ordered + nodes, f"{OP} only", inputs, outputs, list(constants.values()))
    result = helper.make_model(graph, opset_imports=model.opset_import)
    result.ir_version = model.ir_version
    return result, len(nodes)


def time_graph(model: onnx.ModelProto, threads: int, runs: int) -> float:
    """Median ms of one run of the graph on random one-position inputs (after a tenth of the runs as warm-up)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in session.get_inputs()}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times[runs // 10:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="the graphs alternate this many times")
    args = parser.parse_args()
    graphs = {path: kernel_graph(path) for path in args.models}
    for _ in range(args.rounds):
        for path, (graph, count) in graphs.items():
            print(f"{path}: {count} {OP} nodes, {time_graph(graph, args.threads, args.runs):.2f} ms per run")


if __name__ == "__main__":
    main()
