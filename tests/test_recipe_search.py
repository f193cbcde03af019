"""The default int4 recipe search (luodi/quantization/recipe_search.py) on a tiny random model, whose weights
sit on no quantization grid: the choice respects the budget, every candidate is recorded in the manifest, a
budget nothing meets is a one-line error naming the closest candidate, and an explicit --method skips it."""

from dataclasses import replace

import numpy as np
import pytest

from luodi.cli import _parser
from luodi.contract.quantization import RecipeMeasurement
from luodi.errors import QualityBudgetError
from luodi.manifest import read_manifest
from luodi.quantization.recipe_search import (CANDIDATES, DEFAULT_BUDGET, SKIP_MARGIN, measure_candidates,
                                             within_budget)

from test_parity import _max_diff


def test_the_default_int4_picks_the_cheapest_candidate_within_the_budget(quantized):
    manifest = read_manifest(quantized("int4"))
    search = manifest.recipe_search
    assert search is not None and search.budget == DEFAULT_BUDGET
    assert [c.name for c in sorted(search.candidates, key=lambda c: c.name)] == \
        sorted(r.name for r in CANDIDATES)  # every candidate recorded
    costs = [c.cost for c in search.candidates]
    assert costs == sorted(costs)  # in cost order
    chosen = next(c for c in search.candidates if c.name == search.chosen)
    assert chosen.perplexity_increase is not None and chosen.perplexity_increase <= search.budget
    by_name = {c.name: c for c in search.candidates}
    for candidate in search.candidates[:search.candidates.index(chosen)]:  # each cheaper one: measured and over,
        if candidate.skipped and "more precise" in candidate.skipped:  # or a more precise sibling was over,
            sibling = by_name[candidate.skipped.split(",")[0]]
            assert sibling.method == candidate.method and sibling.perplexity_increase > search.budget
        else:
            assert candidate.skipped and "does not divide" in candidate.skipped or \
                candidate.perplexity_increase > search.budget  # or impossible for this model's sizes
    smallest = min(c.group_size for c in search.candidates if "does not divide" not in (c.skipped or ""))
    for candidate in search.candidates[search.candidates.index(chosen) + 1:]:  # the slower ones are not measured,
        assert candidate.skipped or (candidate.group_size, candidate.head_bits) == (smallest, 8)  # but each
        # method's most precise candidate, measured first
    # the export is the chosen recipe
    q = manifest.quantization
    assert (q["method"], q["group_size"]) == (chosen.method, chosen.group_size)
    assert bool(q["kept_int8"]) == (chosen.head_bits == 8)
    assert q["calibration_tokens"] > search.calibration_tokens > 0


def test_the_chosen_int4_stays_close_to_transformers(quantized, reference):
    """Fidelity: the chosen recipe's logits stay within int4's expected error of transformers' fp32 ones, and
    its measured KL on the calibration windows is small."""
    folder = quantized("int4")
    search = read_manifest(folder).recipe_search
    chosen = next(c for c in search.candidates if c.name == search.chosen)
    assert 0 <= chosen.kl < 0.05
    assert 1e-4 < _max_diff("tiny-qwen2", lambda name: folder, reference, statistic=np.mean) < 0.1


def test_an_explicit_method_skips_the_search(quantized):
    manifest = read_manifest(quantized("int4", method="rtn"))
    assert manifest.recipe_search is None
    assert (manifest.quantization["method"], manifest.quantization["group_size"]) == ("rtn", 32)


def test_a_budget_nothing_meets_names_the_closest_candidate():
    records = [RecipeMeasurement("rtn_sym g64 head int4", "rtn_sym", 64, 4, 1.0, 0.21, 0.1),
               RecipeMeasurement("rtn g64 head int4", "rtn", 64, 4, 1.1, 0.08, 0.05),
               RecipeMeasurement("minmax g32 head int8", "minmax", 32, 8, 2.0, None, None, "slower than x")]
    assert within_budget(records, 0.10).name == "rtn g64 head int4"
    with pytest.raises(QualityBudgetError) as error:
        within_budget(records, 0.03)
    message = str(error.value)
    assert "\n" not in message and "within 3.0%" in message and "rtn g64 head int4 at +8.0%" in message
    with pytest.raises(QualityBudgetError, match="does not divide"):
        within_budget([replace(records[0], perplexity_increase=None, skipped="group 128 does not divide [64]")],
                      0.03)


def test_max_quality_loss_takes_a_percentage_or_a_fraction(capsys):
    parse = _parser().parse_args
    assert parse(["export", "m", "--max-quality-loss", "3%"]).max_quality_loss == pytest.approx(0.03)
    assert parse(["export", "m", "--max-quality-loss", "0.05"]).max_quality_loss == pytest.approx(0.05)
    for bad in ("-1%", "3", "lots"):  # a bare 3 could mean 3% or 300%: refused
        with pytest.raises(SystemExit) as exit_:
            parse(["export", "m", "--max-quality-loss", bad])
        assert exit_.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_budget_applies_to_the_search_only(quantized):
    from luodi.errors import LuodiError

    with pytest.raises(LuodiError, match="which --method, --keep and --size-budget replace"):
        quantized("int4", method="rtn", max_quality_loss=0.05)
    with pytest.raises(LuodiError, match="which --method, --keep and --size-budget replace"):
        quantized("int4", keep=("lm_head",), max_quality_loss=0.05)


def test_keep_without_a_method_is_rtn_as_before(quantized):
    manifest = read_manifest(quantized("int4", keep=("lm_head",)))
    assert manifest.recipe_search is None
    assert manifest.quantization["method"] == "rtn" and manifest.quantization["kept_int8"]


# SmolLM2-135M's MatMul shapes (K, N): 30 blocks of q, k, v, o, gate, up, down, and the tied LM head
SMOLLM2_SHAPES = {f"{i}.{name}": shape for i in range(30) for name, shape in
                  {"q": (576, 576), "k": (576, 192), "v": (576, 192), "o": (576, 576), "gate": (576, 1536),
                   "up": (576, 1536), "down": (1536, 576)}.items()} | {"head": (576, 49152)}


def _quality(recipe) -> float:
    """A made-up perplexity increase that grows with the group size and a narrower head, per method."""
    return {"rtn_sym": 0.2, "rtn": 0.1, "minmax": 0.0}[recipe.method] + recipe.group_size / 2000 \
        + (0.04 if recipe.head_bits == 4 else 0.0)


@pytest.mark.parametrize("budget", [0.001, 0.03, 0.07, 0.2, 0.5])
def test_the_search_picks_what_measuring_every_candidate_picks_with_fewer_trials(budget):
    trials = []

    def measure(recipe):
        trials.append(recipe)
        return _quality(recipe), 0.0

    records = measure_candidates(list(CANDIDATES), SMOLLM2_SHAPES, "head", budget, measure)
    full = measure_candidates(list(CANDIDATES), SMOLLM2_SHAPES, "head", budget, lambda r: (_quality(r), 0.0),
                              exhaustive=True)
    assert [r.name for r in records] == [r.name for r in full]  # every candidate recorded, in cost order
    assert len(trials) == len(set(trials)) < sum(r.perplexity_increase is not None for r in full) == 12
    fits = [r for r in full if r.perplexity_increase is not None and r.perplexity_increase <= budget]
    if not fits:  # refused after one trial per method, naming the closest candidate
        assert sorted(r.name for r in trials) == ["minmax g32 head int8", "rtn g32 head int8", "rtn_sym g32 head int8"]
        with pytest.raises(QualityBudgetError, match="closest is minmax g32 head int8"):
            within_budget(records, budget)
        return
    assert within_budget(records, budget).name == fits[0].name
    for record in records:  # nothing skipped for a failing sibling that would have fitted
        if record.skipped and "more precise" in record.skipped:
            assert _quality(next(r for r in CANDIDATES if r.name == record.name)) > budget


def test_a_sibling_that_missed_narrowly_does_not_hide_a_coarser_recipe_inside_the_budget():
    """Noise can score a coarser recipe below its more precise sibling: when the sibling misses the budget by
    less than SKIP_MARGIN, the coarser ones are still measured and the cheapest within the budget is chosen."""
    noisy = {"minmax g32 head int8": 0.035, "minmax g32 head int4": 0.028}

    def measure(recipe):
        return noisy.get(recipe.name, 0.5), 0.0

    records = measure_candidates(list(CANDIDATES), SMOLLM2_SHAPES, "head", 0.03, measure)
    assert within_budget(records, 0.03).name == "minmax g32 head int4"
    noisy["minmax g32 head int8"] = 0.03 + SKIP_MARGIN + 0.001  # missed by more than noise: passed over
    far = measure_candidates(list(CANDIDATES), SMOLLM2_SHAPES, "head", 0.03, measure)
    assert next(r for r in far if r.name == "minmax g32 head int4").skipped.startswith("minmax g32 head int8")
