"""The shape of a decoder-only model (contract.manifest.ModelSpec), read once from a Hugging Face config."""

from ..contract.manifest import LAYER_TYPES, ModelSpec
from ..errors import CorruptModelError, UnsupportedArchitectureError
from ..families import family_of

_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu": "gelu"}
_STATIC_ROPE = {"default", "linear", "llama3", "yarn"}
SLIDING, FULL = LAYER_TYPES


def _sliding_window(config) -> int | None:
    """The attention window, where the model restricts attention to one; None if it attends to all."""
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    if config.model_type in ("qwen2", "qwen3") and SLIDING not in (getattr(config, "layer_types", None) or []):
        return None
    return int(window)


def _layer_windows(config, window: int | None) -> tuple[int | None, tuple[str, ...]]:
    """(sliding window, layer types) when sliding layers mix with full ones, else (None, ()): a window every
    layer shares caps the max context instead, so attention over the whole context is what the model does."""
    types = tuple(getattr(config, "layer_types", None) or ())
    if window is None or not types or SLIDING not in types or set(types) == {SLIDING}:
        return None, ()
    if set(types) - {SLIDING, FULL} or len(types) != config.num_hidden_layers:
        raise UnsupportedArchitectureError(f"layer types {sorted(set(types))} are not supported "
                                           f"(supported: {SLIDING}, {FULL}, one per layer)")
    return window, types


def _rope_types(config) -> list[str]:
    """Every rope type the config uses (Gemma 3 keeps one rope setting per layer type)."""
    rope = getattr(config, "rope_parameters", None) or {}
    settings = [v for v in rope.values() if isinstance(v, dict)] or [rope]
    return [r.get("rope_type", "default") for r in settings]


def _gemma_traits(config, hidden: int) -> dict:
    """Gemma 2/3: four norms a block, embeddings scaled by sqrt(hidden) (the model's dtype rounds it; the
    canonical decoder casts it the same way), scores scaled by query_pre_attn_scalar^-0.5, soft-capping
    (Gemma 3's attention ignores attn_logit_softcapping, as transformers does)."""
    gemma3 = config.model_type == "gemma3_text"
    return {"sandwich_norms": True, "embedding_scale": float(hidden ** 0.5),
            "attention_scale": float(config.query_pre_attn_scalar ** -0.5),
            "attn_softcap": None if gemma3 else _cap(config.attn_logit_softcapping),
            "final_softcap": _cap(config.final_logit_softcapping)}


def _cap(value) -> float | None:
    return float(value) if value else None


def spec_from_config(config, max_context: int | None = None) -> ModelSpec:
    """Read the model's ModelSpec from a transformers config, refusing features the canonical decoder lacks.

    The max context defaults to the model's own (capped at its sliding window, so that attention over
    the whole context is exactly what the model does).
    """
    fam = family_of(config.model_type)
    if fam.positions == "rope":
        for rope_type in _rope_types(config):
            if rope_type not in _STATIC_ROPE:
                raise UnsupportedArchitectureError(
                    f"rope type {rope_type!r} is not supported (supported: {', '.join(sorted(_STATIC_ROPE))})")
    if config.model_type == "gpt2" and (config.scale_attn_by_inverse_layer_idx or config.reorder_and_upcast_attn
                                        or not config.scale_attn_weights):
        raise UnsupportedArchitectureError("gpt2 attention-scaling variants are not supported")
    act_name = config.activation_function if config.model_type == "gpt2" else (
        getattr(config, "hidden_activation", None) or config.hidden_act)
    if act_name not in _ACTIVATIONS:
        raise UnsupportedArchitectureError(f"activation {act_name!r} is not supported")
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    rotary_dim = 0
    if fam.positions == "rope":
        rope = getattr(config, "rope_parameters", None) or {}
        factor = rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None)) or 1.0
        rotary_dim = int(head_dim * factor)
    limit = config.max_position_embeddings
    if not isinstance(limit, int) or limit < 1:
        raise CorruptModelError(f"config.json: max_position_embeddings {limit!r} is not a context length")
    uniform_window = _sliding_window(config)
    window, layer_types = _layer_windows(config, uniform_window)
    if uniform_window and not layer_types:
        limit = min(limit, uniform_window)
    if max_context is not None:
        if max_context < 1 or max_context > limit:
            raise UnsupportedArchitectureError(f"max context {max_context} is outside 1..{limit} for this model")
        limit = max_context
    return ModelSpec(
        model_type=config.model_type,
        family=fam.name,
        vocab_size=config.vocab_size,
        hidden_size=hidden,
        num_layers=config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        norm=fam.norm,
        norm_eps=float(config.layer_norm_epsilon if fam.norm == "layer" else config.rms_norm_eps),
        positions=fam.positions,
        activation=_ACTIVATIONS[act_name],
        gated_mlp=fam.gated_mlp,
        max_context=int(limit),
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        rotary_dim=rotary_dim,
        qk_norm=fam.qk_norm,
        sliding_window=window,
        layer_types=layer_types,
        **(_gemma_traits(config, hidden) if fam.gemma_block else {}),
    )
