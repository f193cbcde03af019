"""MLP width: the intermediate channels with the least activation on calibration text leave every block
(the same count per block, so config.json's one intermediate_size describes them all)."""

from .slicing import MLP_IN, layer_prefix, select, top_indices


def prune_mlp(state: dict, config: dict, scores, remove: int) -> dict:
    """Remove `remove` channels from each block's MLP (gate/up rows, down_proj columns); what was removed."""
    keep_count = config["intermediate_size"] - remove
    for i in range(config["num_hidden_layers"]):
        keep = top_indices(scores[i], keep_count)
        p = layer_prefix(i) + "mlp."
        for name in MLP_IN:
            select(state, f"{p}{name}.weight", 0, keep)
            select(state, f"{p}{name}.bias", 0, keep)
        select(state, f"{p}down_proj.weight", 1, keep)
    config["intermediate_size"] = keep_count
    return {"channels_per_block": remove, "intermediate_size": keep_count}
