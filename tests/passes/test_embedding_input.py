"""embedding_input on small graphs (the lookup leaves the graph; the runtime's rows give the same outputs), the
runtime's table reader and its refusals, and restoring the lookup for consumers that feed token ids."""

import json

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import luodi
from luodi.errors import CorruptModelError, LuodiError
from luodi.exporters.onnx_export import embedding_table_entry, save_onnx
from luodi.contract.graph import EMBEDDING_TABLE_KEY
from luodi.contract.manifest import EmbeddingTableRef
from luodi.passes.embedding_input import EmbeddingInput
from luodi.serving.token_lookup import restore_token_lookup
from luodi.runtimes.embedding_table import EmbeddingTable

from .graphs import HIDDEN, const, run

VOCAB = 60
IDS = np.random.default_rng(3).integers(0, VOCAB, (2, 3))


def _lookup(other_reader: str | None = None):
    """Token ids -> Gather over a [vocab, hidden] table -> x * 2, plus the sequence length from Shape(ids)[1:2]
    (as the traced decoders read it); `other_reader` adds a node of that type reading the ids."""
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["rows"], axis=0),
             helper.make_node("Add", ["rows", "rows"], ["y"]),
             helper.make_node("Shape", ["input_ids"], ["seq"], start=1, end=2)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", HIDDEN]),
               helper.make_tensor_value_info("seq", TensorProto.INT64, [1])]
    if other_reader:
        nodes.append(helper.make_node(other_reader, ["input_ids"], ["other"]))
        outputs.append(helper.make_tensor_value_info("other", TensorProto.INT64, ["b", "s"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                              outputs, [const("table", np.random.default_rng(4).standard_normal((VOCAB, HIDDEN)))])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def _saved(tmp_path, m) -> tuple:
    """Save a model as an export folder would hold it; (model path, manifest-style table entry)."""
    path = save_onnx(m, tmp_path)
    return path, embedding_table_entry(path)


def test_lookup_becomes_an_input_the_runtime_fills_from_the_file(tmp_path):
    want = run(_lookup(), {"input_ids": IDS})
    m = _lookup()
    graph_pass = EmbeddingInput()
    graph_pass(m)
    assert graph_pass.count == 1 and [n.op_type for n in m.graph] == ["Add", "Shape"]
    assert [v.name for v in m.graph.inputs] == ["inputs_embeds"] and m.metadata_props[EMBEDDING_TABLE_KEY] == "table"
    path, entry = _saved(tmp_path, m)
    assert entry == {"file": "model.onnx.data", "offset": 0, "shape": [VOCAB, HIDDEN], "dtype": "float32"}
    rows = EmbeddingTable(tmp_path, EmbeddingTableRef(**entry))(IDS)
    assert rows.shape == (2, 3, HIDDEN)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"inputs_embeds": rows})
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])  # the sequence length, now read from the rows' shape


@pytest.mark.parametrize("other_reader", ["Identity", "Neg"])
def test_ids_read_by_other_ops_keep_the_lookup(other_reader):
    m = _lookup(other_reader)
    graph_pass = EmbeddingInput()
    graph_pass(m)
    assert graph_pass.count == 0 and [v.name for v in m.graph.inputs] == ["input_ids"]


def test_restored_lookup_takes_token_ids_again(tmp_path):
    want = run(_lookup(), {"input_ids": IDS})
    m = _lookup()
    EmbeddingInput()(m)
    path, _ = _saved(tmp_path, m)
    assert restore_token_lookup(path) and not restore_token_lookup(path)  # once; then there is nothing to restore
    proto = onnx.load(str(path), load_external_data=False)
    assert [i.name for i in proto.graph.input] == ["input_ids"] and not proto.metadata_props
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input_ids": IDS})
    np.testing.assert_array_equal(got[0], want[0])


def test_table_reader_refuses_bad_files_and_ids(tmp_path):
    m = _lookup()
    EmbeddingInput()(m)
    _, entry = _saved(tmp_path, m)
    table = EmbeddingTable(tmp_path, EmbeddingTableRef(**entry))
    with pytest.raises(LuodiError, match="token id out of range"):
        table(np.array([[0, VOCAB]]))
    with pytest.raises(LuodiError, match="token id out of range"):
        table(np.array([[-1]]))
    with pytest.raises(CorruptModelError, match="outside the model's folder"):
        EmbeddingTable(tmp_path, EmbeddingTableRef(**entry | {"file": "../model.onnx.data"}))
    with pytest.raises(CorruptModelError, match="malformed"):
        EmbeddingTable(tmp_path, EmbeddingTableRef(**entry | {"dtype": "int4"}))
    with pytest.raises(CorruptModelError, match="truncated"):
        EmbeddingTable(tmp_path, EmbeddingTableRef(**entry | {"offset": 8}))  # the table would run past the end of the file


def test_export_reads_rows_from_the_file_and_tampering_is_caught(tmp_path, export_dir):
    """A tied model's default ort export: the table is stored once (the LM head's views and the runtime's rows
    read the same bytes), no node reads it, and a manifest whose table entry escapes the folder is refused."""
    import shutil

    folder = export_dir("tiny-qwen2")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["io"]["inputs"][0] == "inputs_embeds" and manifest["passes"]["lm_head_view"] == 1
    assert (folder / "model.onnx.data").stat().st_size <= manifest["memory"]["weight_bytes"]  # views add no bytes
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    table = manifest["embedding_table"]
    name = next(t.name for t in graph.initializer if list(t.dims) == table["shape"]
                and {e.key: e.value for e in t.external_data}.get("offset", "0") == str(table["offset"]))
    assert not [n for n in graph.node if name in n.input]
    lm = luodi.load(folder)
    assert lm.generate("The capital of France is", max_new_tokens=8).token_ids
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    manifest["embedding_table"]["file"] = "../model.onnx.data"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LuodiError, match="embedding_table.file.*escapes the bundle"):  # the manifest check, first
        luodi.load(copy)
