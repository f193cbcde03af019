"""The token lookup put back into a graph whose lookup the embedding_input pass left to luodi's runtime, for
consumers that feed token ids to the bare graph (a Triton raw model)."""

import onnx

from ..contract.graph import EMBEDDING_TABLE_KEY, INPUT_IDS, INPUTS_EMBEDS, embedding_table_name


def restore_token_lookup(path) -> bool:
    """Put the lookup back into a saved model.onnx that takes inputs_embeds (in place; the data file is
    unchanged): `input_ids` in, Gather over the table its metadata names. For consumers that feed token ids
    to the bare graph (a Triton raw model). Returns whether the model needed it."""
    proto = onnx.load(str(path), load_external_data=False)
    graph = proto.graph
    table = embedding_table_name(proto)
    embeds = next((i for i in graph.input if i.name == INPUTS_EMBEDS), None)
    if table is None or embeds is None:
        return False
    batch, seq = embeds.type.tensor_type.shape.dim[:2]
    ids = onnx.helper.make_tensor_value_info(INPUT_IDS, onnx.TensorProto.INT64,
                                             [batch.dim_param or batch.dim_value, seq.dim_param or seq.dim_value])
    graph.input.insert(list(graph.input).index(embeds), ids)
    graph.input.remove(embeds)
    graph.node.insert(0, onnx.helper.make_node("Gather", [table, INPUT_IDS], [INPUTS_EMBEDS], axis=0,
                                               name="token_lookup"))
    kept = [p for p in proto.metadata_props if p.key != EMBEDDING_TABLE_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(path))
    return True
