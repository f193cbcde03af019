"""The size target as amounts to remove per axis, and the pruned model built from them.

Every listed axis gives up the same share s of what it can give (blocks: all but one; KV groups: all but
one per block; MLP channels: all but MLP_STEP, in steps of MLP_STEP, int4's default group size, so the widths left
divide into int4's blocks; hidden width: down to a multiple of HIDDEN_STEP and of the heads left, which
transformers' config requires; a multiple of 32 too would leave SmolLM2's 9 heads only 288 or 576, so a
hidden width int4's groups do not divide is refused by int4 at group 32, in one line);
s is the smallest share whose model meets the target, found by bisection over parameter counts that
transformers itself reports for the pruned config (on the meta device: no memory). `auto` is `mlp,depth`:
MLP channels (most of a block's weights, the width axis Minitron found cheapest to lose) and whole blocks
(which also save per-layer work at decode time) in equal shares.
"""

import math

import torch

from ..contract.quantization import DEFAULT_GROUP_SIZE
from ..errors import LuodiError
from .prune_depth import prune_depth
from .prune_heads import prune_heads
from .prune_hidden import prune_hidden
from .prune_mlp import prune_mlp

AXES = ("mlp", "heads", "hidden", "depth")  # applied in this order (depth renumbers blocks, so it is last)
AUTO = ("mlp", "depth")
MLP_STEP = DEFAULT_GROUP_SIZE  # MLP widths left divide into int4's blocks
HIDDEN_STEP = 8


def parse_axes(text: str) -> tuple[str, ...]:
    """--prune's comma-separated axes (auto expanded), in the order they are applied."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    if "auto" in names:
        names = (names - {"auto"}) | set(AUTO)
    unknown = names - set(AXES)
    if unknown or not names:
        raise LuodiError(f"--prune {text!r}: choose from {', '.join(AXES)}, auto (comma-separated)")
    return tuple(axis for axis in AXES if axis in names)


def count_params(config: dict) -> int:
    """Parameters of the model a config describes (tied weights once), as transformers builds it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    return sum(p.numel() for p in model.parameters())


def _removable(config: dict, axis: str) -> int:
    """Units an axis can give: blocks (all but one), or MLP steps of MLP_STEP channels (all but one step)."""
    return {"depth": config["num_hidden_layers"] - 1, "mlp": max(0, config["intermediate_size"] // MLP_STEP - 1)}[axis]


def _heads_removed(config: dict, share: float, hidden_pruned: bool) -> int:
    """KV groups to remove: the share of all but one, fewer where the hidden width would not divide by the
    heads left (transformers requires hidden_size % num_attention_heads == 0 even with head_dim explicit)."""
    groups = config["num_key_value_heads"]
    per_group = config["num_attention_heads"] // groups
    k = math.floor(share * (groups - 1) + 1e-9)
    while k and not hidden_pruned and config["hidden_size"] % ((groups - k) * per_group):
        k -= 1
    return k


def _hidden_removed(config: dict, share: float, heads_left: int) -> int:
    """Hidden channels to remove: the width left is a multiple of HIDDEN_STEP and of the heads left."""
    unit = math.lcm(HIDDEN_STEP, heads_left)
    width = config["hidden_size"]
    left = unit * max(1, math.floor((width - share * max(0, width - unit)) / unit + 1e-9))
    return width - left


def amounts(config: dict, axes: tuple, share: float) -> dict:
    """{axis: units removed} for a share in [0, 1] (channels for mlp/hidden, KV groups per block, blocks)."""
    found = {axis: math.floor(share * _removable(config, axis) + 1e-9) for axis in ("depth", "mlp") if axis in axes}
    if found.get("mlp"):  # channels: the width left is a whole number of steps
        width = config["intermediate_size"]
        found["mlp"] = width - (width // MLP_STEP - found["mlp"]) * MLP_STEP
    heads_left = config["num_attention_heads"]
    if "heads" in axes:
        found["heads"] = _heads_removed(config, share, "hidden" in axes)
        heads_left -= found["heads"] * (config["num_attention_heads"] // config["num_key_value_heads"])
    if "hidden" in axes:
        found["hidden"] = _hidden_removed(config, share, heads_left)
    return found


def shape_after(config: dict, removal: dict) -> dict:
    """The config of the model `removal` leaves (shapes only; no weights are touched)."""
    out = dict(config)
    if "mlp" in removal:
        out["intermediate_size"] -= removal["mlp"]
    if "heads" in removal:
        per_group = out["num_attention_heads"] // out["num_key_value_heads"]
        out["num_key_value_heads"] -= removal["heads"]
        out["num_attention_heads"] = out["num_key_value_heads"] * per_group
    if "hidden" in removal:
        out["hidden_size"] -= removal["hidden"]
    if "depth" in removal:
        out["num_hidden_layers"] -= removal["depth"]
    return out


def params_after(config: dict, axes: tuple, share: float, rank: float | None = None) -> int:
    """Parameters left by pruning `axes` at `share` and then factoring at `rank` (None: no factoring)."""
    from .low_rank import planned_ranks, saved_params

    shape = shape_after(config, amounts(config, axes, share))
    shape.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
    return count_params(shape) - (saved_params(shape, planned_ranks(shape, rank)) if rank else 0)


def plan_removal(config: dict, axes: tuple, target_params: int, rank: float | None = None) -> dict:
    """The smallest removal along `axes` (equal shares) whose model, factored at `rank` if given, has at most
    `target_params` parameters."""
    smallest = params_after(config, axes, 1.0, rank)
    if smallest > target_params:
        raise LuodiError(f"--prune {','.join(axes)} cannot go below {smallest:,} parameters "
                         f"({smallest / count_params(config):.3f} of the original); prune more axes or aim higher")
    low, high = 0.0, 1.0
    for _ in range(30):
        mid = (low + high) / 2
        if params_after(config, axes, mid, rank) <= target_params:
            high = mid
        else:
            low = mid
    return amounts(config, axes, high)


_PRUNERS = {"mlp": (prune_mlp, "mlp"), "heads": (prune_heads, "kv_groups"), "hidden": (prune_hidden, "hidden"),
            "depth": (prune_depth, "blocks")}


def apply_removal(state: dict, config: dict, importance, removal: dict) -> dict:
    """Prune `state` and `config` in place, axis by axis; per axis what was removed."""
    config.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
    record = {}
    for axis in AXES:
        if removal.get(axis):
            prune, field = _PRUNERS[axis]
            record[axis] = prune(state, config, getattr(importance, field), removal[axis])
    return record
