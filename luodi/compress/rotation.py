"""The residual stream turned by a random orthogonal matrix Q: the same function, other weights.

A Llama block reads the residual stream r only through RMSNorm, and RMSNorm without its weight commutes
with any orthogonal Q (the norm of rQ is the norm of r): SliceGPT's "computational invariance". So with
each norm's weight folded into the projections that read it, the model on the stream r' = rQ is
  embedding E -> EQ;  q/k/v, gate/up (and the LM head), which read it: W -> W diag(g) Q;
  o_proj, down_proj, which write it: W -> Q^T W;  every norm's weight -> 1,
and its logits are the original's to float rounding. The LM head becomes its own tensor (the embedding
and the head no longer share one table, as the final norm is folded into the head only).

luodi uses it to make a model whose weights lie on no quantization grid: SmolLM2's and Gemma 3's come
from GGUF files, so every weight is already on a 4-to-8-bit grid, which flatters quantization recipes that
match it (docs/QUANTIZATION.md, "A model off the grid: SmolLM2 rotated"). Each rotated weight mixes a whole row or column
of the original's, so its values are off any grid, and the fp32 model is unchanged.
"""

import torch

from ..errors import LuodiError
from ..families import family_of
from .slicing import ATTENTION_IN, MLP_IN, layer_prefix

_WRITERS = ("self_attn.o_proj", "mlp.down_proj")


def random_orthogonal(size: int, seed: int) -> torch.Tensor:
    """A Haar-random orthogonal matrix (float64): QR of a Gaussian matrix with the signs of R's diagonal
    moved into Q, so the draw is uniform over the orthogonal group."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _fold(weight: torch.Tensor, norm: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """A reader's weight [out, in] with its norm's weight folded in, on the rotated stream: W diag(g) Q."""
    return ((weight.double() * norm.double()) @ q).float()


def check_rotatable(config: dict, state: dict | None = None) -> None:
    """Refuse, in one line, a model the rotation would change: norms other than a plain RMSNorm before each
    branch (LayerNorm, Gemma's (1 + w) and its norms after each branch), an ungated MLP, or (given the
    state dict) projections it does not know (Phi-3's fused ones). Without the state, the config alone is
    checked, before any weight is loaded."""
    family = family_of(config.get("model_type", ""))
    if family.norm != "rms" or family.norm_offset or family.gemma_block or not family.gated_mlp:
        raise LuodiError("rotating the residual stream needs Llama-style blocks (a plain RMSNorm before each "
                         f"branch, a gated MLP); this is {family.name}")
    if state is None:
        return
    known = {"input_layernorm", "post_attention_layernorm", *(f"self_attn.{n}" for n in ATTENTION_IN),
             *(f"mlp.{n}" for n in MLP_IN), *_WRITERS}
    per_head = {"self_attn.q_norm", "self_attn.k_norm"}  # read q and k, not the stream: untouched
    for i in range(config["num_hidden_layers"]):
        p = layer_prefix(i)
        names = {key[len(p):].rsplit(".", 1)[0] for key in state if key.startswith(p)} - per_head
        if names != known:
            raise LuodiError("rotating the residual stream needs separate q/k/v and gate/up projections; block "
                             f"{i} has {', '.join(sorted(names - known)) or 'no more'} and lacks "
                             f"{', '.join(sorted(known - names)) or 'nothing'}")


def rotate_residual(config: dict, state: dict, seed: int) -> tuple[dict, dict]:
    """(config, state dict) of the same model on the residual stream turned by a random orthogonal matrix
    (seeded); the config unties the embedding and the LM head (the head is its own tensor now)."""
    check_rotatable(config, state)
    q = random_orthogonal(config["hidden_size"], seed)
    out = dict(state)
    embedding = state["model.embed_tokens.weight"]
    head = state.get("lm_head.weight", embedding)
    out["model.embed_tokens.weight"] = (embedding.double() @ q).float()
    out["lm_head.weight"] = _fold(head, state["model.norm.weight"], q)
    out["model.norm.weight"] = torch.ones_like(state["model.norm.weight"])
    for i in range(config["num_hidden_layers"]):
        p = layer_prefix(i)
        readers = {"input_layernorm": [f"self_attn.{n}" for n in ATTENTION_IN],
                   "post_attention_layernorm": [f"mlp.{n}" for n in MLP_IN]}
        for norm, names in readers.items():
            g = state[f"{p}{norm}.weight"]
            for name in names:
                out[f"{p}{name}.weight"] = _fold(state[f"{p}{name}.weight"], g, q)
            out[f"{p}{norm}.weight"] = torch.ones_like(g)
        for name in _WRITERS:
            out[f"{p}{name}.weight"] = (q.T @ state[f"{p}{name}.weight"].double()).float()
            if f"{p}{name}.bias" in state:
                out[f"{p}{name}.bias"] = (state[f"{p}{name}.bias"].double() @ q).float()
    return config | {"tie_word_embeddings": False}, out
