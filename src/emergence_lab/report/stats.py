"""The report's statistics: paired tests over seeds, Holm's correction, verdicts, power and
partial correlations. Pure functions of numbers; every test and interval comes from scipy or
statsmodels.

Replicates are seeds. A claim about pruning is tested on the differences pruned minus control
paired by seed (n = seeds); a claim across pruning levels on each seed's mean difference over
the levels (level is a factor averaged within a seed, never a replicate).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.tools import add_constant
from statsmodels.tools.sm_exceptions import ConvergenceWarning

ALPHA = 0.05
POWER = 0.8
VERDICTS = ("supported", "contradicted", "inconclusive", "not enough data")
MAX_SEEDS = 10_000  # "more than this" for the seeds an effect would need
MIN_SEEDS = 2  # the fewest replicates a paired t-test takes


@dataclass
class Paired:
    """A one-sample t-test of differences against 0."""

    n: int
    mean: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    p: float = math.nan
    sd: float = math.nan
    censored: float = math.nan  # target times censored (time-to-event claims), else NaN

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def paired_test(diffs: Sequence[float], confidence: float = 1 - ALPHA) -> Paired:
    """Mean difference, its t-interval and the two-sided p-value (scipy's ttest_1samp), NaN
    ignored. Below 2 differences: n only. Differences that do not vary get the t-test's limit
    (scipy's own answer for them: |t| infinite, p = 0; p = 1 when they are all 0) and the value
    itself as interval, so a constant difference gets the verdict of its nearly constant
    neighbours (five differences of -2 and four of -2 with one of -3 alike)."""
    d = np.asarray([x for x in diffs if x is not None and not math.isnan(x)], float)
    if len(d) < 2:
        return Paired(n=len(d), mean=float(d[0]) if len(d) else math.nan)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # equal up to rounding: no spread to test with
        sd = 0.0
        p = 1.0 if mean == 0 else 0.0
        return Paired(len(d), mean, mean, mean, float(p), 0.0)
    res = stats.ttest_1samp(d, 0.0)
    ci = res.confidence_interval(confidence)
    return Paired(len(d), mean, float(ci.low), float(ci.high), float(res.pvalue), sd)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels), NaN left as NaN and not counted in the family."""
    p = np.asarray(pvalues, float)
    out = np.full(len(p), math.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
    return out.tolist()


def verdict(mean: float, p_adjusted: float, direction: int, alpha: float = ALPHA) -> str:
    """supported: significant (after correction) on the claimed side (direction +1: the
    difference is positive, -1: negative); contradicted: significant on the other side;
    inconclusive: not significant (the interval includes 0); not enough data: no test."""
    if math.isnan(p_adjusted) or math.isnan(mean):
        return "not enough data"
    if p_adjusted >= alpha or mean == 0:
        return "inconclusive"
    return "supported" if np.sign(mean) == direction else "contradicted"


def seeds_for_power(mean: float, sd: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """Seeds a paired t-test needs to detect an effect of this size (Cohen's d_z = mean / sd)
    at this power and two-sided alpha (statsmodels' TTestPower); inf for no effect, NaN when
    the spread is unknown."""
    if math.isnan(mean) or math.isnan(sd) or sd == 0:
        return math.nan
    if mean == 0:
        return math.inf
    test, d = TTestPower(), abs(mean) / sd
    if test.power(effect_size=d, nobs=MIN_SEEDS, alpha=alpha) >= power:
        return float(MIN_SEEDS)  # the fewest a paired t-test takes; solve_power finds no root
    try:
        with warnings.catch_warnings():  # a root past its search bound: inf below, not a warning
            warnings.simplefilter("ignore", ConvergenceWarning)
            n = test.solve_power(effect_size=d, alpha=alpha, power=power, alternative="two-sided")
    except (ValueError, RuntimeError):  # no solution below statsmodels' search bound
        return math.inf
    n = float(np.asarray(n).item())
    return float(math.ceil(n)) if math.isfinite(n) and n <= MAX_SEEDS else math.inf


def partial_spearman(x: Sequence[float], y: Sequence[float],
                     controls: pd.DataFrame | None = None) -> float:
    """Spearman correlation of x and y after removing what (the ranks of) the controls explain:
    the Pearson correlation of the OLS residuals of rank(x) and rank(y) on rank(controls)
    (statsmodels). Controls that do not vary are dropped; NaN when x or y does not vary."""
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan
    if controls is not None and not controls.empty:
        ranks = controls.apply(stats.rankdata).loc[:, lambda d: d.std() > 0]
        ranks = ranks.loc[:, ~ranks.T.duplicated()]  # e.g. dead units = 0-dormant units
        if not ranks.empty:
            design = add_constant(ranks.to_numpy(float), has_constant="add")
            with warnings.catch_warnings():
                # collinear controls leave the coefficients open but not the residuals (the
                # projection onto their span, which OLS's pseudo-inverse computes)
                warnings.simplefilter("ignore")
                rx = OLS(rx, design).fit().resid
                ry = OLS(ry, design).fit().resid
            if np.ptp(rx) < 1e-12 or np.ptp(ry) < 1e-12:
                return math.nan
    return float(stats.pearsonr(rx, ry).statistic)
