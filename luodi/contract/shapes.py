"""The input shapes a decode loop can produce, as optimization profiles for engines with fixed ranges.

The decode loop refuses a prompt that leaves no room for a new token (longest prompt < max context) and a
batch above the backend's max_batch; a step then feeds either the whole (left-padded) prompt or up to
`max_step` new tokens per row (one token, or one plus the drafts a speculative step verifies). Two profiles
cover every such shape: `decode` (steps of 1..max_step tokens) and `prefill` (1..max_context - 1 tokens);
the attention mask spans past + new positions, 1..max_context. The KV buffers are fixed: [batch, kv_heads,
max_context, head_dim].
"""

from dataclasses import dataclass

from ..errors import ContextLengthError
from .graph import INPUT_IDS, POSITION_IDS, STEP_WINDOW

TOKEN_INPUTS = (INPUT_IDS, POSITION_IDS)


@dataclass(frozen=True)
class ShapeLimits:
    """The limits the decode loop enforces, from which the profiles are derived."""

    max_batch: int
    max_context: int
    max_step: int = STEP_WINDOW

    @property
    def max_prompt(self) -> int:
        return self.max_context - 1


def profiles(limits: ShapeLimits, kv_names: list[str], kv_heads: int, head_dim: int) -> dict[str, dict]:
    """{profile name: {input name: [min, opt, max] shapes}}: decode first (chosen for short steps), then prefill."""
    b, ctx = limits.max_batch, limits.max_context
    step = min(limits.max_step, limits.max_prompt)
    kv = {name: [[1, kv_heads, ctx, head_dim], [1, kv_heads, ctx, head_dim], [b, kv_heads, ctx, head_dim]]
          for name in kv_names}

    def profile(tokens: int, opt_tokens: int, opt_total: int) -> dict:
        shapes = {name: [[1, 1], [1, opt_tokens], [b, tokens]] for name in TOKEN_INPUTS}
        return {**shapes, "attention_mask": [[1, 1], [1, opt_total], [b, ctx]], **kv}

    return {"decode": profile(step, 1, min(512, ctx)),
            "prefill": profile(limits.max_prompt, min(256, limits.max_prompt), min(256, ctx))}


def covers(profile: dict, shapes: dict[str, tuple]) -> bool:
    """Whether every named input shape lies within the profile's [min, max] ranges."""
    for name, shape in shapes.items():
        low, _, high = profile[name]
        if len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high)):
            return False
    return True


def pick_profile(all_profiles: dict[str, dict], shapes: dict[str, tuple]) -> str:
    """The first profile covering the shapes, or a clear error before anything runs."""
    if not all_profiles:
        raise ContextLengthError("the engine records no optimization profiles (built without TensorRT's builder?)")
    for name, profile in all_profiles.items():
        if covers(profile, shapes):
            return name
    ranges = "; ".join(f"{n}: batch <= {p['input_ids'][2][0]}, tokens <= {p['input_ids'][2][1]}"
                       for n, p in all_profiles.items())
    raise ContextLengthError(f"no engine profile covers input shapes {shapes} ({ranges}; mask width <= "
                             f"{next(iter(all_profiles.values()))['attention_mask'][2][1]})")
