"""What each prunable unit contributes, measured in one pass of the original model over calibration text.

- block: the angular distance arccos(cos(x_in, x_out)) / pi between a decoder block's input and output,
  averaged over tokens (ShortGPT's block influence; Gromov et al.): a block that barely turns the
  residual stream is the cheapest to remove;
- KV group: the mean L2 norm of its query heads' attention outputs (the rows o_proj reads), summed over
  the heads that share the group's keys and values (Minitron's head importance, grouped so GQA stays valid);
- MLP channel: the mean |act(gate(x)) * up(x)| of the channel (the input down_proj reads; Minitron);
- hidden channel: the mean |x| of the channel at every norm's output (each block's two norms and the final
  one), summed (Minitron's embedding-channel importance).
"""

from dataclasses import dataclass

import torch


@dataclass
class Importance:
    """Scores per unit: blocks [layers], kv_groups [layers, groups], mlp [layers, intermediate], hidden [hidden]."""

    blocks: torch.Tensor
    kv_groups: torch.Tensor
    mlp: torch.Tensor
    hidden: torch.Tensor
    tokens: int


class _Sums:
    """Running per-layer sums the hooks add to, and the token count they are averaged over."""

    def __init__(self, config):
        layers, heads = config.num_hidden_layers, config.num_attention_heads
        self.blocks = torch.zeros(layers, dtype=torch.float64)
        self.heads = torch.zeros(layers, heads, dtype=torch.float64)
        self.mlp = torch.zeros(layers, config.intermediate_size, dtype=torch.float64)
        self.hidden = torch.zeros(config.hidden_size, dtype=torch.float64)
        self.head_dim = config.head_dim
        self.heads_count = heads
        self.tokens = 0


def _hooks(model, sums: _Sums) -> list:
    """Forward hooks on every block, o_proj, down_proj and norm that add their measurements to `sums`."""
    handles = []
    for i, layer in enumerate(model.model.layers):
        def block_in(module, args, kwargs, i=i):
            module._luodi_input = args[0] if args else kwargs["hidden_states"]

        def block_out(module, args, kwargs, output, i=i):
            x_in, x_out = module._luodi_input.double(), (output[0] if isinstance(output, tuple) else output).double()
            cos = torch.nn.functional.cosine_similarity(x_in, x_out, dim=-1).clamp(-1, 1)
            sums.blocks[i] += (torch.arccos(cos) / torch.pi).sum()
            del module._luodi_input

        def heads_in(module, args, i=i):
            x = args[0].double()
            per_head = x.reshape(*x.shape[:-1], sums.heads_count, sums.head_dim).norm(dim=-1)
            sums.heads[i] += per_head.reshape(-1, sums.heads_count).sum(0)

        def mlp_in(module, args, i=i):
            sums.mlp[i] += args[0].double().abs().reshape(-1, args[0].shape[-1]).sum(0)

        handles += [layer.register_forward_pre_hook(block_in, with_kwargs=True),
                    layer.register_forward_hook(block_out, with_kwargs=True),
                    layer.self_attn.o_proj.register_forward_pre_hook(heads_in),
                    layer.mlp.down_proj.register_forward_pre_hook(mlp_in)]
    norms = [m for layer in model.model.layers for m in (layer.input_layernorm, layer.post_attention_layernorm)]

    def norm_out(module, args, output):  # a hook returning a value would replace the output: this returns None
        sums.hidden += output.double().abs().reshape(-1, output.shape[-1]).sum(0)

    handles += [norm.register_forward_hook(norm_out) for norm in [*norms, model.model.norm]]
    return handles


@torch.no_grad()
def measure_importance(model, windows: list[list[int]]) -> Importance:
    """Run the model over each calibration window (one sequence each) and average every unit's score."""
    sums = _Sums(model.config)
    handles = _hooks(model, sums)
    try:
        for window in windows:
            model(torch.tensor([window]), use_cache=False)
            sums.tokens += len(window)
    finally:
        for handle in handles:
            handle.remove()
    n = max(sums.tokens, 1)
    config = model.config
    per_group = config.num_attention_heads // config.num_key_value_heads
    kv_groups = sums.heads.reshape(config.num_hidden_layers, config.num_key_value_heads, per_group).sum(-1)
    return Importance(blocks=sums.blocks / n, kv_groups=kv_groups / n, mlp=sums.mlp / n, hidden=sums.hidden / n,
                      tokens=sums.tokens)
