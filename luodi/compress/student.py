"""The pruned model as transformers builds it from its new config, and its config as config.json records it."""

import torch

from ..errors import CorruptModelError
from ..families import family_of

PRUNABLE_FAMILIES = ("llama",)  # separate q/k/v and gate/up projections, RMSNorm, rotary (Llama, Mistral, SmolLM2)


def check_prunable(config) -> None:
    """Refuse, in one line, a model whose family the pruning axes do not know."""
    family = family_of(config.model_type).name
    if family not in PRUNABLE_FAMILIES:
        raise CorruptModelError(f"luodi compress prunes Llama-family models (llama, mistral); this is {family}")


def build_student(config: dict, state: dict, ranks: dict | None = None):
    """A transformers causal LM of `config` (its `ranks` projections factored, low_rank.py) holding exactly
    the tensors of `state` (fp32, eval mode)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .low_rank import factor_modules

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    factor_modules(model, ranks or {}, weights=False)
    wanted = model.state_dict()
    missing = sorted(set(wanted) - set(state))
    unexpected = sorted(set(state) - set(wanted))
    wrong = [n for n in set(wanted) & set(state) if wanted[n].shape != state[n].shape]
    if missing or unexpected or wrong:  # a bug in an axis, never the user's input
        raise RuntimeError(f"pruned weights do not fit the pruned config: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}")
    model.load_state_dict(state)
    return model.eval()


def param_count(model) -> int:
    """Parameters of a model, tied weights once."""
    return sum(p.numel() for p in model.parameters())
