"""Attention heads, in whole KV groups: a group's key/value head leaves with every query head that reads
it, so the model stays valid grouped-query attention (the same number of groups leaves each block)."""

import torch

from .slicing import ATTENTION_IN, layer_prefix, select, top_indices


def _rows(units: torch.Tensor, width: int) -> torch.Tensor:
    """Row indices of whole units (heads or groups of heads) `width` rows wide each."""
    return (units[:, None] * width + torch.arange(width)[None]).reshape(-1)


def prune_heads(state: dict, config: dict, group_scores, remove: int) -> dict:
    """Remove the `remove` least important KV groups of each block; the groups removed per block."""
    groups, head_dim = config["num_key_value_heads"], config["head_dim"]
    per_group = config["num_attention_heads"] // groups
    removed = {}
    for i in range(config["num_hidden_layers"]):
        keep = top_indices(group_scores[i], groups - remove)
        removed[i] = sorted(set(range(groups)) - set(keep.tolist()))
        query_rows = _rows(_rows(keep, per_group), head_dim)
        kv_rows = _rows(keep, head_dim)
        p = layer_prefix(i) + "self_attn."
        for name, rows in zip(ATTENTION_IN, (query_rows, kv_rows, kv_rows)):
            select(state, f"{p}{name}.weight", 0, rows)
            select(state, f"{p}{name}.bias", 0, rows)
        select(state, f"{p}o_proj.weight", 1, query_rows)
    config["num_key_value_heads"] = groups - remove
    config["num_attention_heads"] = (groups - remove) * per_group
    return {"kv_groups_removed": {str(i): g for i, g in removed.items()},
            "num_attention_heads": config["num_attention_heads"], "num_key_value_heads": config["num_key_value_heads"]}
