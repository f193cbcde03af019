"""Hidden width: the residual-stream channels with the least magnitude at the norms' outputs leave the whole
model at once: the embedding (and an untied LM head), every norm, every projection that reads the stream
(columns) and every one that writes it (rows). The head size stays as it was (config.json says head_dim
explicitly: it is no longer hidden_size / heads). RMSNorm then averages over fewer channels, an
approximation distillation corrects."""

from .slicing import ATTENTION_IN, MLP_IN, layer_prefix, select, top_indices

_WRITERS = ("self_attn.o_proj", "mlp.down_proj")


def prune_hidden(state: dict, config: dict, scores, remove: int) -> dict:
    """Remove `remove` hidden channels everywhere; which ones."""
    keep = top_indices(scores, config["hidden_size"] - remove)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        select(state, name, 1, keep)
    select(state, "model.norm.weight", 0, keep)
    for i in range(config["num_hidden_layers"]):
        p = layer_prefix(i)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            select(state, f"{p}{norm}.weight", 0, keep)
        for name in [f"self_attn.{n}" for n in ATTENTION_IN] + [f"mlp.{n}" for n in MLP_IN]:
            select(state, f"{p}{name}.weight", 1, keep)
        for name in _WRITERS:
            select(state, f"{p}{name}.weight", 0, keep)
            select(state, f"{p}{name}.bias", 0, keep)
    config["hidden_size"] = len(keep)
    removed = sorted(set(range(len(scores))) - set(keep.tolist()))
    return {"channels_removed": removed, "hidden_size": config["hidden_size"]}
