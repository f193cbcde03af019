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
from luodi.quantization.recipe_search import CANDIDATES, DEFAULT_BUDGET, within_budget

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
    for candidate in search.candidates[:search.candidates.index(chosen)]:  # each cheaper one: measured and over,
        assert candidate.skipped and "does not divide" in candidate.skipped or \
            candidate.perplexity_increase > search.budget  # or impossible for this model's sizes
    for candidate in search.candidates[search.candidates.index(chosen) + 1:]:
        assert candidate.skipped  # the slower ones are not measured
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
