"""The default int4 recipe (`luodi export --precision int4` without --method): the fastest candidate whose
measured quality loss is within a budget.

Each candidate (CANDIDATES: the one list of the recipes the search knows) is quantized for real, by the same
code an explicit --method runs (ort_weights.quantize_model), and scored by the quality proxy
(quality_proxy.py: perplexity increase against the float graph on calibration windows through ONNX Runtime).
"Fastest" is a cost model, not a timing: the estimated milliseconds per decoded token, from the bytes each
MatMul's weights take at its width plus a fixed cost per MatMul whose float zero points are lowered to extra
nodes (float_zero_points.py). Its constants are fitted to luodi's own measurements of SmolLM2-135M on this
project's 2-core machine (docs/QUANTIZATION.md, "The default int4 recipe search"). Each method's most
precise candidate is measured first; then candidates are measured cheapest first and the first within the
budget is chosen, passing over those whose more precise sibling already missed it (measure_candidates);
the slower ones are recorded as not measured (or all are measured with `exhaustive`). A budget nothing
meets is a one-line QualityBudgetError naming the closest candidate, after one trial per method.
"""

import contextlib
import math
from dataclasses import dataclass, replace
from pathlib import Path

from ..contract.graph import LOGITS
from ..contract.quantization import RecipeMeasurement, RecipeSearch
from ..contract.schema import to_json
from ..errors import QualityBudgetError
from ..process_memory import release_freed_memory
from .calibration import quantizable_matmuls
from .ort_weights import WeightQuantization, load_float_model, quantize_model
from .quality_proxy import QualityProxy

DEFAULT_BUDGET = 0.03  # perplexity within 3% of the float graph's
WINDOWS = 8  # calibration windows (calibration.WINDOW tokens each) the proxy scores
FLOAT_ZERO_POINTS = ("minmax",)  # methods whose float zero points are lowered to extra nodes per MatMul
# cost model (ms per decoded token): ms per MB of MatMul weights read at 4 and 8 bits, and per lowered MatMul
MS_PER_MB = {4: 0.054, 8: 0.043}
LOWERED_MATMUL_MS = 0.0055


@dataclass(frozen=True)
class Recipe:
    """One candidate: the int4 method of the body, its group size, and the LM head's bits (8: kept at int8,
    RTN; with tied embeddings the lookup reads the head's table either way)."""

    method: str
    group_size: int
    head_bits: int = 4

    @property
    def name(self) -> str:
        return f"{self.method} g{self.group_size} head int{self.head_bits}"

    def quantization(self, base: WeightQuantization) -> WeightQuantization:
        """The explicit WeightQuantization this recipe is (what `--method ... --group-size ... --keep` gives)."""
        return replace(base, method=self.method, group_size=self.group_size, max_quality_loss=None,
                       keep=("lm_head",) if self.head_bits == 8 else ())

    def cost(self, shapes: dict[str, tuple[int, int]], head: str | None) -> float:
        """Estimated ms per decoded token: every MatMul's stored bytes at its width, plus the lowering's nodes."""
        total = 0.0
        for node, (k, n) in shapes.items():
            bits = self.head_bits if node == head else 4
            blocks = k // self.group_size
            lowered = bits == 4 and self.method in FLOAT_ZERO_POINTS
            zero_points = 0 if self.method == "rtn_sym" and bits == 4 else n * math.ceil(blocks * bits / 8)
            stored = k * n * bits / 8 + n * blocks * 2 + (n * blocks * 2 if lowered else zero_points)
            total += stored / 1e6 * MS_PER_MB[bits] + (LOWERED_MATMUL_MS if lowered else 0.0)
        return total


CANDIDATES = tuple(Recipe(method, group, head) for head in (4, 8) for method in ("rtn_sym", "rtn", "minmax")
                   for group in (128, 64, 32))


def search_recipe(onnx_path: Path, base: WeightQuantization, feeds: list[dict],
                  exhaustive: bool = False) -> tuple[WeightQuantization, dict]:
    """(the chosen recipe's WeightQuantization, the manifest's record of the search) for the float graph saved at
    `onnx_path`; `base` carries the budget, accuracy level and calibration ids, `feeds` the calibration prefills.
    A group size given in `base` (not 0) restricts the candidates to it. Each trial loads the graph afresh without
    its MatMul weights and quantizes them one at a time from the file: no float copy of the model is held."""
    import onnx

    budget = DEFAULT_BUDGET if base.max_quality_loss is None else base.max_quality_loss
    model = onnx.load(str(onnx_path), load_external_data=False)  # the structure: names and shapes
    matmuls = quantizable_matmuls(model)
    shapes = {node: tuple(int(d) for d in init.dims) for node, (_, init) in matmuls.items()}
    head = next((n.name for n in model.graph.node if n.name in matmuls and LOGITS in n.output), None)
    candidates = [r for r in CANDIDATES if base.group_size in (0, r.group_size)]
    with contextlib.ExitStack() as stack:  # the proxy runs the float graph at the first candidate it scores
        proxy = None

        def measure(recipe: Recipe) -> tuple[float, float]:
            nonlocal proxy
            proxy = proxy or stack.enter_context(QualityProxy(onnx_path, feeds[:WINDOWS]))
            trial = recipe.quantization(base)
            quantized, _ = quantize_model(load_float_model(onnx_path, trial), trial, feeds, folder=onnx_path.parent)
            quality = proxy.measure(quantized)
            del quantized
            release_freed_memory()  # the quantizer's objects hold the graph in reference cycles: free it now
            return quality.perplexity_increase, quality.kl

        records = measure_candidates(candidates, shapes, head, budget, measure, exhaustive)
    chosen = within_budget(records, budget, base.group_size)
    record = RecipeSearch(budget=budget, proxy=f"perplexity increase vs the float graph, ONNX Runtime, "
                                               f"{proxy.tokens} calibration tokens", calibration_tokens=proxy.tokens,
                          chosen=chosen.name, candidates=records)
    return Recipe(chosen.method, chosen.group_size, chosen.head_bits).quantization(base), to_json(record)


# A more precise sibling must miss the budget by more than this (perplexity increase, absolute) before the
# coarser candidates of its method are passed over: scores of near-equal recipes differ by noise (±0.4% on
# tiny-qwen2, docs/QUANTIZATION.md), and a coarser one may land inside a budget its sibling just missed.
SKIP_MARGIN = 0.01


def _more_precise(a: Recipe, b: Recipe) -> bool:
    """Whether `a` keeps at least everything `b` keeps: the same method, groups no larger, the head no narrower."""
    return a != b and a.method == b.method and a.group_size <= b.group_size and a.head_bits >= b.head_bits


def measure_candidates(candidates: list[Recipe], shapes: dict, head: str | None, budget: float, measure,
                       exhaustive: bool = False) -> list[RecipeMeasurement]:
    """Every candidate's record, in cost order: measured (`measure(recipe)` -> (perplexity increase, KL)), or
    skipped with the reason. First each method's most precise candidate is measured (smallest group dividing
    every MatMul, head at int8); then, cheapest first, until one is within the budget. A candidate is not
    measured when one of its own method that is more precise already missed the budget by more than
    SKIP_MARGIN (coarser groups and a narrower head lose more: true of every search recorded in
    docs/QUANTIZATION.md beyond noise), so a model nothing fits is refused after one trial per method."""
    ordered = sorted(candidates, key=lambda r: r.cost(shapes, head))
    fits = [r for r in ordered if not any(k % r.group_size for k, _ in shapes.values())]
    most_precise = [min((r for r in fits if r.method == method), key=lambda r: (r.group_size, -r.head_bits))
                    for method in dict.fromkeys(r.method for r in fits)]
    results = {recipe: measure(recipe) for recipe in most_precise}  # (perplexity increase, KL)
    records, chosen = [], None
    for recipe in ordered:
        record = RecipeMeasurement(recipe.name, recipe.method, recipe.group_size, recipe.head_bits,
                                   float(f"{recipe.cost(shapes, head):.4g}"))
        missed = next((r for r in results if _more_precise(r, recipe) and results[r][0] > budget + SKIP_MARGIN), None)
        if recipe not in fits:
            undivided = sorted({k for k, _ in shapes.values() if k % recipe.group_size})
            record = replace(record, skipped=f"group {recipe.group_size} does not divide {undivided}")
        elif recipe not in results and chosen is not None and not exhaustive:
            record = replace(record, skipped=f"slower than {chosen.name}")
        elif recipe not in results and missed is not None and not exhaustive:
            record = replace(record, skipped=f"{missed.name}, more precise, missed the budget "
                                             f"({results[missed][0]:+.1%})")
        else:
            if recipe not in results:
                results[recipe] = measure(recipe)
            increase, kl = results[recipe]
            record = replace(record, perplexity_increase=round(increase, 6), kl=round(kl, 6))
            if chosen is None and increase <= budget:
                chosen = recipe
        records.append(record)
    return records


def within_budget(records: list[RecipeMeasurement], budget: float, group_size: int = 0) -> RecipeMeasurement:
    """The cheapest measured record within the budget (records in cost order), or a one-line QualityBudgetError
    naming the closest candidate and its loss."""
    measured = [r for r in records if r.perplexity_increase is not None]
    fit = next((r for r in measured if r.perplexity_increase <= budget), None)
    if fit is not None:
        return fit
    if not measured:
        raise QualityBudgetError(f"no int4 recipe fits this model: {records[0].skipped}" if records else
                                 f"no int4 recipe has group size {group_size}")
    closest = min(measured, key=lambda r: r.perplexity_increase)
    raise QualityBudgetError(f"no int4 recipe keeps perplexity within {budget:.1%} of the float model on the "
                             f"calibration text: the closest is {closest.name} at {closest.perplexity_increase:+.1%}; "
                             "raise --max-quality-loss or use --precision int8")
