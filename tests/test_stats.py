"""The report's statistics against cases computed by hand (tables, formulas)."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from emergence_lab.report import stats, verdicts


def test_paired_t_by_hand():
    # d = 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), se sd/2; t(0.975, df 3) = 3.1824 (tables);
    # t = 2.5 / se = 3.873, two-sided p = 0.0305 (tables)
    t = stats.paired_test([1.0, 2.0, 3.0, 4.0, math.nan])
    se = math.sqrt(5 / 3) / 2
    assert t.n == 4 and t.mean == 2.5 and t.sd == pytest.approx(math.sqrt(5 / 3))
    assert (t.ci_low, t.ci_high) == pytest.approx((2.5 - 3.1824 * se, 2.5 + 3.1824 * se), abs=1e-4)
    assert t.p == pytest.approx(0.0305, abs=5e-4)


def test_paired_t_degenerate_cases():
    assert stats.paired_test([3.0]).n == 1 and math.isnan(stats.paired_test([3.0]).p)
    same = stats.paired_test([-2.0] * 5)  # no spread: the t-test's limit
    assert (same.mean, same.ci_low, same.ci_high, same.p) == (-2.0, -2.0, -2.0, 0.0)
    assert stats.paired_test([0.0, 0.0, 0.0]).p == 1.0


def test_a_constant_difference_gets_the_verdict_of_its_nearly_constant_neighbours():
    """Five differences of -2 against four of -2 and one of -3 (or -2.001): one verdict."""
    verdict = lambda d: stats.verdict(stats.paired_test(d).mean, stats.paired_test(d).p, -1)  # noqa: E731
    constant = verdict([-2.0] * 5)
    assert constant == verdict([-2.0] * 4 + [-3.0]) == verdict([-2.0] * 4 + [-2.001]) == "supported"
    assert verdict([2.0] * 5) == "contradicted"


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(stats.holm([0.01, 0.04, 0.03, math.nan])[3])


def test_three_verdicts_and_not_enough_data():
    assert stats.verdict(-1.0, 0.01, -1) == "supported"
    assert stats.verdict(+1.0, 0.01, -1) == "contradicted"
    assert stats.verdict(-1.0, 0.2, -1) == "inconclusive"  # never "does not hold"
    assert stats.verdict(math.nan, math.nan, -1) == "not enough data"


def test_seeds_for_power_by_hand():
    # d_z = 1 at alpha 0.05 two-sided, power 0.8: n = 10 (G*Power's paired t-test table: 9.94)
    assert stats.seeds_for_power(1.0, 1.0) == 10
    # d_z = 0.5: 33.4 -> 34
    assert stats.seeds_for_power(-0.5, 1.0) == 34
    assert stats.seeds_for_power(0.0, 1.0) == math.inf
    assert math.isnan(stats.seeds_for_power(1.0, 0.0))


def test_a_huge_effect_needs_the_fewest_seeds_without_a_warning():
    """statsmodels' solver finds no root past d_z of about 10 (NaN and a ConvergenceWarning):
    such an effect needs 2 seeds, not "more than any"."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [stats.seeds_for_power(m, 1.0) for m in (10.0, 100.0, 1000.0)] == [2, 2, 2]
        assert stats.seeds_for_power(1e-4, 1.0) == math.inf


def test_partial_spearman_matches_the_formula_with_one_control():
    rng = np.random.default_rng(0)
    z = rng.normal(size=200)
    x, y = z + rng.normal(size=200), z + rng.normal(size=200)
    r = lambda a, b: sps.spearmanr(a, b).statistic  # noqa: E731
    # the first-order partial correlation, on ranks
    formula = (r(x, y) - r(x, z) * r(y, z)) / math.sqrt((1 - r(x, z) ** 2) * (1 - r(y, z) ** 2))
    got = stats.partial_spearman(x, y, pd.DataFrame({"z": z}))
    assert got == pytest.approx(formula, abs=1e-9)
    assert abs(got) < 0.15 < r(x, y)  # what z explains is gone
    assert stats.partial_spearman(x, y) == pytest.approx(r(x, y))
    assert math.isnan(stats.partial_spearman(x, np.ones(200)))


def test_claims_pair_by_seed_and_test_across_levels_on_seed_means():
    """Two levels, three seeds: per-level tests have n = 3, and so has the across-level test
    (each seed's mean over the levels), never n = 6."""
    rows = []
    for seed in range(3):
        rows.append({"run_id": f"c{seed}", "group": "g", "seed": seed, "level": 0.0,
                     "strategy": "control", "label": "control", "final_acc": 0.80 + 0.01 * seed,
                     "epochs_to_99pct_final": 5.0, "prune_epoch": 1, "order": (False, "", 0)})
        for level, cost in ((0.5, 0.02), (0.7, 0.04)):
            rows.append({"run_id": f"p{level}-{seed}", "group": "g", "seed": seed, "level": level,
                         "strategy": "magnitude", "label": f"{level:.0%}",
                         "final_acc": 0.80 + 0.01 * seed - cost - 0.001 * seed ** 2,
                         "epochs_to_99pct_final": 5.0, "prune_epoch": 1,
                         "order": (True, "magnitude", level)})
    per_run = pd.DataFrame(rows).assign(final_from=1)
    # the test accuracy ends at final_acc (the mean of its last epochs is that value)
    hist = pd.DataFrame([(r.run_id, "test/acc", step, r.final_acc) for r in per_run.itertuples()
                         for step in range(1, 14)], columns=["run_id", "key", "step", "value"])
    t = verdicts.claim_tests(per_run, hist, which=["costs_accuracy"]).set_index("scope")
    assert list(t.n) == [3, 3, 3]  # (two levels: no dose-response row)
    # across levels: seed s loses (2 + 4) / 2 + 0.1 s^2 points
    expected = stats.paired_test([-3.0, -3.1, -3.4])
    assert t.loc["all levels", "mean"] == pytest.approx(expected.mean)
    assert t.loc["all levels", "p"] == pytest.approx(expected.p)
    assert t.loc["50%", "mean"] == pytest.approx(np.mean([-2.0, -2.1, -2.4]))
    assert list(t.p_holm) == pytest.approx(stats.holm(list(t.p)))
