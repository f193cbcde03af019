"""Horizontal MatMul packing: projections that read the same input become one MatMul and a Split.

Q/K/V (three projections of the normalized hidden state) and gate/up (two, in SwiGLU MLPs) each turn
into one larger matrix product: one weight read and one kernel launch instead of several. Only MatMuls
whose weights are 2-D constant initializers of the same input width are packed.
"""

import numpy as np
import onnx_ir as ir

from .base import LuodiPass, constant_matmul_weight


class PackMatMuls(LuodiPass):
    name = "pack_matmuls"
    description = "MatMuls sharing an input (Q/K/V, gate/up) -> one MatMul + Split"

    def apply(self, model: ir.Model) -> int:
        graph, count = model.graph, 0
        for value in list(graph.inputs) + [o for n in list(graph) for o in n.outputs]:
            group = [(u.node, w) for u in value.uses()
                     if u.idx == 0 and (w := constant_matmul_weight(u.node)) is not None]
            widths = {w.shape[0] for _, w in group}
            if len(group) < 2 or len(widths) != 1 or len({id(n) for n, _ in group}) != len(group):
                continue
            self._pack(graph, value, group)
            count += 1
        return count

    @staticmethod
    def _pack(graph: ir.Graph, value: ir.Value, group) -> None:
        arrays = [w.const_value.numpy() for _, w in group]
        name = "packed." + "+".join(w.name for _, w in group)
        packed = ir.Value(name=name, shape=ir.Shape([arrays[0].shape[0], sum(a.shape[1] for a in arrays)]),
                          type=ir.TensorType(ir.DataType.FLOAT), const_value=ir.tensor(np.concatenate(arrays, 1),
                                                                                          name=name))
        graph.register_initializer(packed)
        sizes = ir.Value(name=name + ".split", const_value=ir.tensor(np.array([a.shape[1] for a in arrays],
                                                                               dtype=np.int64), name=name + ".split"))
        graph.register_initializer(sizes)
        first = min((n for n, _ in group), key=lambda n: list(graph).index(n))
        matmul = ir.node("MatMul", [value, packed], name=f"{first.name}/packed")
        split = ir.node("Split", [matmul.outputs[0], sizes], {"axis": -1}, num_outputs=len(group),
                        name=f"{first.name}/split")
        graph.insert_before(first, [matmul, split])
        for (node, _), out in zip(group, split.outputs):
            old = node.outputs[0]
            out.name, out.shape, out.type = old.name + ".split", old.shape, old.type
            ir.convenience.replace_all_uses_with(old, out)
            if old.is_graph_output():
                raise ValueError(f"cannot pack {node.name}: its output is a graph output")
            graph.remove(node, safe=True)
        for _, weight in group:
            if not weight.uses():
                graph.initializers.pop(weight.name)
