"""The model families luodi exports, keyed by Hugging Face `model_type`, and their structural traits."""

from dataclasses import dataclass

from .errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class Family:
    """What distinguishes one decoder family from another in the canonical decoder."""

    name: str
    norm: str  # "rms" or "layer"
    positions: str  # "rope" or "learned"
    gated_mlp: bool  # SwiGLU-style gate * up, else a plain fc -> act -> fc
    norm_offset: float = 0.0  # RMSNorm scales by (norm_offset + weight): Gemma's (1 + w), folded at load
    qk_norm: bool = False  # an RMSNorm over each head of q and k before rope (Qwen3, Gemma 3)
    gemma_block: bool = False  # Gemma 2/3: four norms a block, scaled embeddings and scores, soft-capping


FAMILIES = {
    "llama": Family("llama", norm="rms", positions="rope", gated_mlp=True),
    "mistral": Family("llama", norm="rms", positions="rope", gated_mlp=True),
    "qwen2": Family("qwen2", norm="rms", positions="rope", gated_mlp=True),
    "qwen3": Family("qwen3", norm="rms", positions="rope", gated_mlp=True, qk_norm=True),
    "phi3": Family("phi3", norm="rms", positions="rope", gated_mlp=True),
    "gemma2": Family("gemma2", norm="rms", positions="rope", gated_mlp=True, norm_offset=1.0, gemma_block=True),
    "gemma3_text": Family("gemma3", norm="rms", positions="rope", gated_mlp=True, norm_offset=1.0, qk_norm=True,
                          gemma_block=True),
    "gpt2": Family("gpt2", norm="layer", positions="learned", gated_mlp=False),
}


def family_of(model_type: str) -> Family:
    """The family for a Hugging Face model_type, or a clear error naming what is supported."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        supported = ", ".join(sorted(FAMILIES))
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r}: luodi exports {supported}"
        ) from None
