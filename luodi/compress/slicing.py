"""Shared pieces of the pruning axes: the state-dict names of a Llama-family checkpoint and index selection."""

import torch

ATTENTION_IN = ("q_proj", "k_proj", "v_proj")  # read the hidden width (weight columns)
MLP_IN = ("gate_proj", "up_proj")


def layer_prefix(i: int) -> str:
    """The state-dict prefix of decoder block i."""
    return f"model.layers.{i}."


def select(state: dict, name: str, dim: int, keep: torch.Tensor) -> None:
    """Keep only the `keep` indices of tensor `name` along `dim` (if the checkpoint has that tensor)."""
    if name in state:
        state[name] = state[name].index_select(dim, keep).contiguous()


def top_indices(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` highest scores, in ascending index order (so kept units stay in their order)."""
    return scores.topk(keep).indices.sort().values
