"""The manifest's record of the default int4 recipe search (luodi/quantization/recipe_search.py), typed: every
candidate recipe with its estimated per-token cost and its measured quality loss, the budget and the choice.
It lives in the quantization block as `recipe_search`; read it through Manifest.recipe_search."""

from dataclasses import dataclass

from .schema import rule

RECIPE_SEARCH = "recipe_search"  # its key inside the manifest's quantization block
DEFAULT_GROUP_SIZE = 32  # int4 block along a MatMul's input (ORT, TensorRT); compress cuts widths in these steps


@dataclass(frozen=True)
class RecipeMeasurement:
    """One candidate: its recipe (method, group size, LM head bits), the per-token cost the cost model gives it
    (lower is faster), and, when measured, its perplexity increase and mean next-token KL against the float
    graph on the calibration windows."""

    name: str
    method: str
    group_size: int = rule(1, 1 << 16)
    head_bits: int = rule(choices=(4, 8))
    cost: float = rule(0.0, 1e12)
    perplexity_increase: float | None = rule(-1.0, 1e9, default=None)
    kl: float | None = rule(0.0, 1e9, default=None)
    skipped: str | None = None  # why it was not measured (a slower candidate after the choice, a group too big)


@dataclass(frozen=True)
class RecipeSearch:
    """The search: the budget (perplexity increase as a fraction), the proxy's calibration windows, every
    candidate in cost order and the chosen one's name."""

    budget: float = rule(0.0, 1e6)
    proxy: str
    calibration_tokens: int = rule(0, 1 << 31)
    chosen: str
    candidates: list[RecipeMeasurement]
