"""Depth: whole decoder blocks, those that change their input least on calibration text, leave; the rest
are renumbered in order."""

from .slicing import layer_prefix


def prune_depth(state: dict, config: dict, block_scores, remove: int) -> dict:
    """Remove the `remove` blocks of lowest angular distance; which blocks (original numbering)."""
    layers = config["num_hidden_layers"]
    removed = sorted(block_scores.topk(remove, largest=False).indices.tolist()) if remove else []
    kept = [i for i in range(layers) if i not in removed]
    renamed = {}
    for name, tensor in state.items():
        if not name.startswith("model.layers."):
            renamed[name] = tensor
            continue
        index, rest = name[len("model.layers."):].split(".", 1)
        if int(index) in kept:
            renamed[layer_prefix(kept.index(int(index))) + rest] = tensor
    state.clear()
    state.update(renamed)
    config["num_hidden_layers"] = len(kept)
    if isinstance(config.get("layer_types"), list):
        config["layer_types"] = [config["layer_types"][i] for i in kept]
    return {"blocks_removed": removed, "num_hidden_layers": len(kept)}
