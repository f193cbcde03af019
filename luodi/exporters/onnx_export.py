"""Trace the canonical decoder to one ONNX graph that serves prefill and decode.

Inputs: input_ids [batch, sequence], attention_mask [batch, total_sequence], position_ids [batch, sequence],
past_key_values.{i}.key|value [batch, kv_heads, past_sequence, head_dim]. Outputs: logits
[batch, sequence, vocab], present.{i}.key|value [batch, kv_heads, total_sequence, head_dim].
"""

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

from ..passes.kv_cache_scatter import MAX_CONTEXT_KEY
from ..contract.graph import ATTENTION_MASK, embedding_table_name, io_names, is_present_name
from .decoder import CanonicalDecoder

OPSET = 18
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
# ONNX Runtime registers these in the default domain although the ONNX spec has no such op, so the
# ONNX checker rejects graphs that use them
ORT_OPS_IN_DEFAULT_DOMAIN = {"SimplifiedLayerNormalization"}
# com.microsoft ops whose outputs after the first are optional (onnx-ir drops unread optional outputs of the
# standard ops from their schemas; ONNX Runtime's contrib schemas are not in onnx)
CONTRIB_OPTIONAL_OUTPUTS = {"SkipSimplifiedLayerNormalization", "SkipLayerNormalization"}


def _sample_inputs(model: CanonicalDecoder):
    """Example inputs with every dynamic dimension > 1, so the tracer keeps them symbolic."""
    spec, dtype = model.spec, next(model.parameters()).dtype
    batch, seq, past = 2, 3, 4
    ids = torch.zeros(batch, seq, dtype=torch.int64)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    pos = torch.arange(past, past + seq).expand(batch, seq).contiguous()
    kv = [tuple(torch.zeros(batch, spec.num_kv_heads, past, spec.head_dim, dtype=dtype) for _ in range(2))
          for _ in range(spec.num_layers)]
    return ids, mask, pos, kv


def _dynamic_shapes(num_layers: int) -> dict:
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    past = torch.export.Dim("past_sequence")
    return {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: torch.export.Dim.DYNAMIC},
            "position_ids": {0: batch, 1: seq},
            "past_key_values": [({0: batch, 2: past}, {0: batch, 2: past}) for _ in range(num_layers)]}


def _name_total_dim(model) -> None:
    """Give the attention mask's and the presents' length the readable name 'total_sequence'."""
    import onnx_ir as ir

    for value in list(model.graph.inputs) + list(model.graph.outputs):
        if value.name == ATTENTION_MASK or is_present_name(value.name):
            dims = list(value.shape)
            axis = 1 if value.name == ATTENTION_MASK else 2
            dims[axis] = ir.SymbolicDim("total_sequence")
            value.shape = ir.Shape(dims)


# torch records each node's Python stack trace, with this checkout's absolute file paths and line numbers:
# dropped, so an export does not depend on where luodi lives or leak that path into a bundle
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"


def trace_to_onnx(model: CanonicalDecoder):
    """Trace the canonical decoder into an in-memory onnx_ir.Model (weights still in torch memory)."""
    inputs, outputs = io_names(model.spec.num_layers)
    quiet = io.StringIO()
    # torch.onnx prints progress and warns about optional packages (torchvision); keep the CLI clean
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, _sample_inputs(model), dynamo=True, opset_version=OPSET,
                                    dynamic_shapes=_dynamic_shapes(model.spec.num_layers),
                                    input_names=inputs, output_names=outputs, optimize=False, verbose=False)
    _name_total_dim(program.model)
    for node in program.model.graph.all_nodes():
        node.metadata_props.pop(STACK_TRACE_KEY, None)
    program.model.metadata_props[MAX_CONTEXT_KEY] = str(model.spec.max_context)
    return program.model


def _views(graph) -> dict:
    """{name: value} of the initializers marked as views of another one's data (VIEW_OF)."""
    from ..passes.base import VIEW_OF

    return {name: value for name, value in graph.initializers.items() if VIEW_OF in value.meta}


def _add_views(path: Path, views: dict) -> None:
    """Declare each view as an initializer naming its range of its source's bytes in the data file."""
    import onnx

    from ..passes.base import VIEW_OF

    proto = onnx.load(str(path), load_external_data=False)
    stored = {t.name: t for t in proto.graph.initializer}
    for name, value in views.items():
        source, offset = value.meta[VIEW_OF]
        tensor = proto.graph.initializer.add()
        tensor.CopyFrom(stored[source])
        tensor.name = name
        tensor.dims[:] = list(value.shape)
        if tensor.data_location != onnx.TensorProto.EXTERNAL:  # a source small enough to be stored inline
            tensor.raw_data = value.const_value.tobytes()
            continue
        location = {e.key: e.value for e in tensor.external_data}
        location |= {"offset": str(int(location.get("offset", 0)) + offset), "length": str(value.const_value.nbytes)}
        del tensor.external_data[:]
        for key, item in location.items():
            tensor.external_data.add(key=key, value=item)
    onnx.save(proto, str(path))


def embedding_table_entry(path: Path) -> dict | None:
    """Where a saved graph's embedding table lies in its data file ({file, offset, shape, dtype}) when the
    embedding_input pass left the lookup to the runtime, for the manifest; else None."""
    import onnx


    proto = onnx.load(str(path), load_external_data=False)
    name = embedding_table_name(proto)
    if name is None:
        return None
    tensor = next(t for t in proto.graph.initializer if t.name == name)
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        raise RuntimeError(f"the embedding table {name} was saved inline, not in the data file")
    location = {e.key: e.value for e in tensor.external_data}
    return {"file": location["location"], "offset": int(location.get("offset", 0)), "shape": list(tensor.dims),
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name}


def _unname_unread_outputs(graph) -> None:
    """Write the optional outputs of contrib ops that nothing reads unnamed, so ONNX Runtime neither computes
    nor allocates them: the skip norms' mean and inverse deviation (and the last one's sum) took 0.3 ms of a
    6 ms INT4 SmolLM2-135M decode step. Done at saving because any later rewrite names every value again."""
    outputs = frozenset(graph.outputs)
    for node in graph:
        if node.domain != "com.microsoft" or node.op_type not in CONTRIB_OPTIONAL_OUTPUTS:
            continue
        for out in node.outputs[1:]:
            if out not in outputs and not out.uses():
                out.name = ""
        kept = len(node.outputs)
        while kept > 1 and not node.outputs[kept - 1].name:
            kept -= 1
        node.resize_outputs(kept)


def save_onnx(model, out_dir: Path) -> Path:
    """Write an onnx_ir.Model to out_dir/model.onnx with all weights in out_dir/model.onnx.data, then check it.

    Initializers marked as views of another's data (lm_head_view) are stored as ranges of its bytes; strided
    ones (transposed weights) are written a block of rows at a time (strided_writes.py)."""
    import onnx_ir as ir

    from .strided_writes import write_strided_by_rows

    path = Path(out_dir) / MODEL_FILE
    _unname_unread_outputs(model.graph)
    write_strided_by_rows(model.graph)
    views = _views(model.graph)
    for name in views:
        model.graph.initializers.pop(name)
    try:
        ir.save(model, str(path), external_data=DATA_FILE)
    finally:
        for value in views.values():
            model.graph.register_initializer(value)
    if views:
        _add_views(path, views)
    produced = sorted(p.name for p in Path(out_dir).iterdir() if p.name.startswith(MODEL_FILE))
    if produced != [MODEL_FILE, DATA_FILE]:
        raise RuntimeError(f"unexpected export files: {produced}")
    import onnx

    if not any(n.op_type in ORT_OPS_IN_DEFAULT_DOMAIN and n.domain == "" for n in model.graph):
        onnx.checker.check_model(str(path))  # ONNX Runtime's load in the parity check covers the other case
    return path
