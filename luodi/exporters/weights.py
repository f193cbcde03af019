"""Build the canonical decoder from a transformers model: map each family's weights onto it."""

import torch

from ..families import family_of
from .decoder import CanonicalDecoder
from .spec import FULL, SLIDING, ModelSpec, spec_from_config


def _linear(w, b=None):
    return {"weight": w} | ({"bias": b} if b is not None else {})


def _llama_like_layer(layer, spec: ModelSpec) -> dict:
    """Llama, Mistral, Qwen2 (q/k/v bias), Qwen3 (QK-norm), Phi-3 (fused qkv_proj and gate_up_proj) and
    Gemma 2/3 (four norms a block, QK-norm on Gemma 3)."""
    attn, mlp = layer.self_attn, layer.mlp
    out = {"input_norm.weight": layer.input_layernorm.weight}
    if spec.sandwich_norms:  # Gemma: post_attention_layernorm normalizes the attention's output
        out |= {"attn_out_norm.weight": layer.post_attention_layernorm.weight,
                "post_attn_norm.weight": layer.pre_feedforward_layernorm.weight,
                "mlp_out_norm.weight": layer.post_feedforward_layernorm.weight}
    else:
        out["post_attn_norm.weight"] = layer.post_attention_layernorm.weight
    if spec.qk_norm:
        out |= {"attn.q_norm.weight": attn.q_norm.weight, "attn.k_norm.weight": attn.k_norm.weight}
    if hasattr(attn, "qkv_proj"):
        q_size, kv_size = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
        q, k, v = attn.qkv_proj.weight.split([q_size, kv_size, kv_size], dim=0)
        projections = {"q_proj": _linear(q), "k_proj": _linear(k), "v_proj": _linear(v)}
    else:
        projections = {n: _linear(getattr(attn, n).weight, getattr(attn, n).bias)
                       for n in ("q_proj", "k_proj", "v_proj")}
    projections["o_proj"] = _linear(attn.o_proj.weight, attn.o_proj.bias)
    for name, params in projections.items():
        out.update({f"attn.{name}.{p}": t for p, t in params.items()})
    if hasattr(mlp, "gate_up_proj"):
        gate, up = mlp.gate_up_proj.weight.chunk(2, dim=0)
        mlp_params = {"gate_proj": _linear(gate), "up_proj": _linear(up)}
    else:
        mlp_params = {n: _linear(getattr(mlp, n).weight, getattr(mlp, n).bias) for n in ("gate_proj", "up_proj")}
    mlp_params["down_proj"] = _linear(mlp.down_proj.weight, mlp.down_proj.bias)
    for name, params in mlp_params.items():
        out.update({f"mlp.{name}.{p}": t for p, t in params.items()})
    return out


def _gpt2_layer(block, spec: ModelSpec) -> dict:
    """GPT-2 stores Conv1D weights as [in, out]: transpose them into Linear layout."""
    h = spec.hidden_size
    q, k, v = block.attn.c_attn.weight.t().split([h, h, h], dim=0)
    qb, kb, vb = block.attn.c_attn.bias.split([h, h, h], dim=0)
    return {
        "input_norm.weight": block.ln_1.weight, "input_norm.bias": block.ln_1.bias,
        "post_attn_norm.weight": block.ln_2.weight, "post_attn_norm.bias": block.ln_2.bias,
        "attn.q_proj.weight": q, "attn.q_proj.bias": qb, "attn.k_proj.weight": k, "attn.k_proj.bias": kb,
        "attn.v_proj.weight": v, "attn.v_proj.bias": vb,
        "attn.o_proj.weight": block.attn.c_proj.weight.t(), "attn.o_proj.bias": block.attn.c_proj.bias,
        "mlp.up_proj.weight": block.mlp.c_fc.weight.t(), "mlp.up_proj.bias": block.mlp.c_fc.bias,
        "mlp.down_proj.weight": block.mlp.c_proj.weight.t(), "mlp.down_proj.bias": block.mlp.c_proj.bias,
    }


def _rope(rotary_emb, layer_type: str) -> tuple:
    """(inv_freq, attention scaling) transformers' rope init computed for a layer type (Gemma 3 keeps one per
    type, as `<type>_inv_freq`), else the model's one setting."""
    if hasattr(rotary_emb, f"{layer_type}_inv_freq"):
        return getattr(rotary_emb, f"{layer_type}_inv_freq"), getattr(rotary_emb, f"{layer_type}_attention_scaling")
    return rotary_emb.inv_freq, rotary_emb.attention_scaling


def _layer_biases(params: dict) -> dict:
    return {"qkv_bias": "attn.q_proj.bias" in params, "o_bias": "attn.o_proj.bias" in params,
            "mlp_bias": "mlp.down_proj.bias" in params}


def canonical_from_hf(hf_model, max_context: int | None = None, dtype: str | None = None) -> CanonicalDecoder:
    """A CanonicalDecoder holding the weights of a transformers causal LM, in eval mode, in fp32 unless `dtype`
    names another torch dtype (a target that traces in half precision)."""
    spec = spec_from_config(hf_model.config, max_context)
    if spec.family == "gpt2":
        body = hf_model.transformer
        layers = [_gpt2_layer(b, spec) for b in body.h]
        embed, final_norm = body.wte, body.ln_f
        inv_freq, scaling, local_rope = None, 1.0, None
        intermediate = body.h[0].mlp.c_fc.weight.shape[1]
    else:
        body = hf_model.model
        layers = [_llama_like_layer(layer, spec) for layer in body.layers]
        embed, final_norm = body.embed_tokens, body.norm
        (inv_freq, scaling), local_rope = _rope(body.rotary_emb, FULL), None
        if hasattr(body.rotary_emb, f"{SLIDING}_inv_freq"):
            local_rope = _rope(body.rotary_emb, SLIDING)
        for freqs, _ in filter(None, [(inv_freq, scaling), local_rope]):
            if 2 * freqs.numel() != spec.rotary_dim:
                raise RuntimeError(f"rotary dims disagree: config says {spec.rotary_dim}, model has {2 * freqs.numel()}")
        intermediate = layers[0]["mlp.down_proj.weight"].shape[1]
    with torch.device("meta"):  # no storage: the parameters take the transformers model's tensors below
        model = CanonicalDecoder(spec, intermediate, inv_freq=inv_freq, rope_scaling=scaling, local_rope=local_rope,
                                 **_layer_biases(layers[0]))
    state = {"final_norm.weight": final_norm.weight}
    if spec.tie_word_embeddings:
        state["lm_head_weight_t"] = embed.weight.t()
    else:
        state |= {"embed_tokens.weight": embed.weight, "lm_head.weight": hf_model.lm_head.weight}
    if spec.norm == "layer":
        state["final_norm.bias"] = final_norm.bias
    if spec.positions == "learned":
        state["embed_positions.weight"] = body.wpe.weight[: spec.max_context]
    for i, params in enumerate(layers):
        state.update({f"layers.{i}.{k}": v for k, v in params.items()})
    with torch.no_grad():
        # fp32 tensors are shared with the transformers model, not copied (one copy of the weights, not two);
        # nothing changes them in place (AWQ rebinds what it scales). The tied table stays a transposed view.
        state = {k: v.detach().float() if k == "lm_head_weight_t" else v.detach().float().contiguous()
                 for k, v in state.items()}
        offset = family_of(hf_model.config.model_type).norm_offset
        if offset:  # Gemma's RMSNorm scales by (1 + w), computed in fp32: fold the 1 into the weight
            state = {k: v + offset if k.endswith("norm.weight") else v for k, v in state.items()}
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise RuntimeError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    return model.eval() if dtype is None else model.to(getattr(torch, dtype)).eval()


def factor_low_rank(model: CanonicalDecoder, hf_dir) -> None:
    """Factor again the projections `luodi compress` trained as two thin matrices (its compression.json's
    low_rank; the folder holds their rank-r products), so the graph reads the factors (luodi/compress/low_rank.py)."""
    from ..compress.low_rank import factor_modules
    from ..compress.record import low_rank_ranks
    from ..errors import CorruptModelError

    ranks = {path.removeprefix("model.").replace(".self_attn.", ".attn."): rank
             for path, rank in low_rank_ranks(hf_dir).items()}
    for path, rank in ranks.items():
        try:
            linear = model.get_submodule(path)
        except AttributeError:
            linear = None
        if not isinstance(linear, torch.nn.Linear) or rank >= min(linear.in_features, linear.out_features):
            raise CorruptModelError(f"{hf_dir}/compression.json: low_rank names {path} at rank {rank}, which this "
                                    "model has no full-rank projection for")
    factor_modules(model, ranks)
