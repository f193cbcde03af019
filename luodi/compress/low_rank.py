"""Low-rank factorization: a projection's weight W [out, in] replaced by two thin ones, up [out, r] and
down [r, in] (truncated SVD, each factor taking the square root of the singular values), where that stores
fewer numbers: r * (in + out) < in * out.

How it stays an ordinary Hugging Face folder: the student trains in factored form (FactoredLinear modules
inside the transformers model), and is saved with each factored projection's weight as the product
up @ down, a plain Linear weight of rank r that transformers loads as it is. compression.json lists the
factored projections and their ranks (`low_rank`); luodi's exporter factors those weights again
(factor_canonical) so the exported graph reads the two thin matrices: the bytes are saved where they are
read, at decode time. A rank-r matrix's SVD gives back its factors to float rounding.
"""

import torch
from torch import nn

from ..contract.quantization import DEFAULT_GROUP_SIZE
from ..errors import LuodiError

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
RANK_STEP = DEFAULT_GROUP_SIZE  # a rank is the up factor's input width: int4's blocks divide it


class FactoredLinear(nn.Module):
    """x -> up(down(x)): a Linear of rank `rank` stored as its two factors (the bias, if any, on `up`)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x):
        return self.up(self.down(x))


def parse_rank(text: str) -> float:
    """--low-rank's value: an integer rank (>= 1) or a fraction of each weight's full rank in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise LuodiError(f"--low-rank {text!r}: a rank (integer) or a fraction of the full rank in (0, 1)") from None
    if not (0 < value < 1 or (value >= 1 and value == int(value))):
        raise LuodiError(f"--low-rank {text!r}: a rank (integer) or a fraction of the full rank in (0, 1)")
    return value


def rank_for(rank: float, in_features: int, out_features: int) -> int | None:
    """The rank a weight gets (a multiple of RANK_STEP for a fraction), or None where factoring saves nothing."""
    r = int(rank) if rank >= 1 else max(RANK_STEP, int(rank * min(in_features, out_features)) // RANK_STEP * RANK_STEP)
    return r if r * (in_features + out_features) < in_features * out_features else None


def _shapes(config: dict) -> dict:
    """{projection: (in, out)} of a Llama config's blocks."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    q, kv = config["num_attention_heads"] * config["head_dim"], config["num_key_value_heads"] * config["head_dim"]
    return {"self_attn.q_proj": (hidden, q), "self_attn.k_proj": (hidden, kv), "self_attn.v_proj": (hidden, kv),
            "self_attn.o_proj": (q, hidden), "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter),
            "mlp.down_proj": (inter, hidden)}


def planned_ranks(config: dict, rank: float) -> dict:
    """{projection path: rank} of every projection of a Llama config that factoring at `rank` shrinks."""
    found = {}
    for name, (fan_in, fan_out) in _shapes(config).items():
        r = rank_for(rank, fan_in, fan_out)
        if r is not None:
            found |= {f"model.layers.{i}.{name}": r for i in range(config["num_hidden_layers"])}
    return found


def saved_params(config: dict, ranks: dict) -> int:
    """Parameters factoring at `ranks` removes from a model of `config` (the factors' sizes counted)."""
    shapes = _shapes(config)
    total = 0
    for path, r in ranks.items():
        fan_in, fan_out = shapes[path.split(".", 3)[3]]
        total += fan_in * fan_out - r * (fan_in + fan_out)
    return total


def _parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent, _, name = path.rpartition(".")
    return model.get_submodule(parent), name


@torch.no_grad()
def factor(linear: nn.Linear, rank: int) -> FactoredLinear:
    """The best rank-`rank` approximation of a Linear (truncated SVD, fp64), as a FactoredLinear."""
    u, s, vh = torch.linalg.svd(linear.weight.double(), full_matrices=False)
    root = s[:rank].sqrt()
    out = FactoredLinear(linear.in_features, linear.out_features, rank, linear.bias is not None)
    out.down.weight.copy_(root[:, None] * vh[:rank])
    out.up.weight.copy_(u[:, :rank] * root)
    if linear.bias is not None:
        out.up.bias.copy_(linear.bias)
    return out.to(linear.weight.dtype)


def factor_modules(model: nn.Module, ranks: dict, weights: bool = True) -> None:
    """Replace each listed Linear of `model` (paths as in `ranks`) by its rank-r FactoredLinear, in place:
    its SVD factors, or (weights=False) an empty one for a checkpoint's weights to fill."""
    for path, rank in ranks.items():
        parent, name = _parent(model, path)
        linear = getattr(parent, name)
        setattr(parent, name, factor(linear, rank) if weights else FactoredLinear(
            linear.in_features, linear.out_features, rank, linear.bias is not None))


@torch.no_grad()
def merge_modules(model: nn.Module) -> None:
    """Replace every FactoredLinear by a plain Linear holding up @ down (the folder transformers loads)."""
    for path, module in [(p, m) for p, m in model.named_modules() if isinstance(m, FactoredLinear)]:
        merged = nn.Linear(module.down.in_features, module.up.out_features, bias=module.up.bias is not None)
        merged.weight.copy_(module.up.weight @ module.down.weight)
        if module.up.bias is not None:
            merged.bias.copy_(module.up.bias)
        parent, name = _parent(model, path)
        setattr(parent, name, merged)
