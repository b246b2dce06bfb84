"""E itself: lower after pruning than its control's, per parameter against a matched null
(random pruning at the same sparsity), falling during training, and predicting where a
network ends beyond where it is."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.regression.linear_model import OLS
from statsmodels.tools import add_constant

from emergence_lab.measure import keys as mk
from emergence_lab.report import stats
from emergence_lab.report.claims.base import ALL_RUNS, CLAIMS, TAIL, Claim, Rows, end_value, references, wide

RANDOM = "random"  # the matched null of relative E: random pruning at the same amount


def summed_log_ratio(g: pd.DataFrame, hist: pd.DataFrame, key: str, against: str = "control",
                     per_param: bool = False, offset: float = 1.0,
                     refs: pd.Series | None = None) -> pd.Series:
    """Per run, log of (its key summed over the epochs after pruning + offset) over the same
    sum of its reference run (`references`), over the epochs both logged. A sum is dominated by
    the epochs where E is large, so a handful of paths left where the reference has none barely
    moves it; the offset (one path; with `per_param`, one path per parameter) only keeps an
    all-zero sum defined. NaN without a reference or when a sum is 0. `refs`: each run's
    reference run id, given (else `references(g, against)`)."""
    w = wide(hist, key, g.run_id)
    n = wide(hist, mk.PARAMS, g.run_id) if per_param else None
    out = []
    refs = references(g, against) if refs is None else refs
    for rid, ref, pe in zip(g.run_id, refs, g.final_from, strict=True):
        if not isinstance(ref, str) or ref not in w:
            out.append(math.nan)
            continue
        both = w[[rid, ref]].dropna()
        both = both[both.index > pe]
        off = [1.0 / float(n[c].dropna().iloc[-1]) if per_param and n[c].notna().any() else
               (0.0 if per_param else offset) for c in (rid, ref)]
        a, b = float(both[rid].sum()) + off[0], float(both[ref].sum()) + off[1]
        out.append(math.log(a / b) if len(both) and a > 0 and b > 0 else math.nan)
    return pd.Series(out, index=g.index, dtype=float)


SIZE_MATCH = 0.1  # a dense network "of the pruned size": surviving parameters within 10 %


def dense_references(g: pd.DataFrame) -> pd.Series:
    """Each pruned run's dense network of its size: the unpruned run of the same seed (in any
    group of the family: another width) whose parameter count is closest to the pruned run's
    surviving count, within SIZE_MATCH of it; NaN where the sweep has none."""
    dense = g[g.level == 0]
    out = pd.Series(math.nan, index=g.index, dtype=object)
    for idx, r in g[g.level > 0].iterrows():
        c = dense[dense.seed == r.seed]
        gap = (c.params_surviving - r.params_surviving).abs() / r.params_surviving
        if len(c) and gap.min() <= SIZE_MATCH:
            out[idx] = c.run_id[gap.idxmin()]
    return out


def e_trend(g: pd.DataFrame, hist: pd.DataFrame, key: str) -> pd.Series:
    """Per run, the Spearman correlation of E with the epoch: from epoch 1 for a control, over
    the epochs after pruning for a pruned run (the pruning step's own drop left out)."""
    w = wide(hist, key, g.run_id)
    out = []
    for rid, lv, pe in zip(g.run_id, g.level, g.final_from, strict=True):
        c = w[rid].dropna()
        c = c[c.index > (pe if lv > 0 else 0)]
        ok = len(c) >= 3 and np.ptp(c.to_numpy()) > 0
        out.append(float(sps.spearmanr(c.index, c.to_numpy()).statistic) if ok else math.nan)
    return pd.Series(out, index=g.index, dtype=float)


def partial_rank_test(x: pd.Series, y: pd.Series, z: pd.Series | None) -> stats.Paired:
    """Does x go with y beyond z, between runs? The partial Spearman correlation (ranks, z
    partialled out; statsmodels OLS), its p from the OLS t-test of rank(x) in rank(y) ~ rank(z)
    + rank(x) (the same test), and a Fisher-z 95 % interval. n = runs. Without z (None, or
    not logged): the plain Spearman correlation and the same test without it."""
    z = z if z is not None and z.notna().any() else None
    ok = x.notna() & y.notna() & (z.notna() if z is not None else True)
    x, y = x[ok], y[ok]
    z = z[ok] if z is not None else None
    n, k = len(x), 1 if z is not None else 0
    if n < 5 or np.ptp(x.to_numpy()) == 0 or np.ptp(y.to_numpy()) == 0:
        return stats.Paired(n=n)
    rho = stats.partial_spearman(x, y, pd.DataFrame({"z": z.to_numpy()}) if k else None)
    if math.isnan(rho):
        return stats.Paired(n=n)
    ranks = [sps.rankdata(z)] if k else []
    design = add_constant(np.column_stack([*ranks, sps.rankdata(x)]), has_constant="add")
    p = float(OLS(sps.rankdata(y), design).fit().pvalues[-1])
    half = sps.norm.ppf(1 - stats.ALPHA / 2) / math.sqrt(max(n - 3 - k, 1))
    at = math.atanh(max(min(rho, 0.999999), -0.999999))
    return stats.Paired(n, rho, math.tanh(at - half), math.tanh(at + half), p, math.nan)


def predicts_accuracy(claim: Claim, g: pd.DataFrame, hist: pd.DataFrame, e_key: str,
                      rel_key: str) -> Rows:
    """Between the runs of a group, E at the first epoch after pruning (epoch 1 where nothing
    is pruned) against the final test accuracy, the test accuracy at that epoch partialled
    out. A signal that is only the epoch number is the same in every run there: no test."""
    e, acc = wide(hist, e_key, g.run_id), wide(hist, mk.TEST_ACC, g.run_id)
    at = (g.final_from + 1).to_numpy()
    x = pd.Series([e[r].get(t, math.nan) for r, t in zip(g.run_id, at, strict=True)], g.index)
    z = pd.Series([acc[r].get(t, math.nan) for r, t in zip(g.run_id, at, strict=True)], g.index)
    yield "", ALL_RUNS, partial_rank_test(x, end_value(hist, g, mk.TEST_ACC), z)


CLAIMS.add(Claim(
    "lowers_E",
    "Pruning lowers absolute emergence E: E summed over the epochs after pruning, pruned over "
    "its paired control (log of the ratio of the sums, +1 path each; as % change)", -1,
    "% change in E", lambda g, h, e, r: summed_log_ratio(g, h, e),
    "less E than its control after pruning",
    "a ratio of sums weighs the epochs where E is large: a handful of paths left where the "
    "control has none barely moves it; under the paper's counting routes through pruned "
    "weights still count (edges: the settings table)", log_scale=True, trend=True,
    reads="E after pruning", reading="B1 'post-pruning, we typically observe a drop in emergence'"))
CLAIMS.add(Claim(
    "relative_E_vs_random",
    "Magnitude pruning raises relative emergence (E per surviving parameter) beyond what "
    "removing as many parameters at random does: summed over the epochs after pruning, "
    "against random pruning at the same amount, group and seed (as % change)", +1,
    "% change in rel. E vs random", lambda g, h, e, r: summed_log_ratio(g, h, r, RANDOM, True),
    "more E per parameter than random pruning at the same sparsity",
    "the matched null: the same parameter count, so the parameter ratio cancels (against the "
    "unpruned control relative E rises by the ratio alone: 'Relative E explained'); needs a "
    "random arm at the same amounts (pruning=random)",
    log_scale=True, against=RANDOM, comparison="pruned minus random pruning at the same amount "
    "(same group and seed), paired by seed", reads="relative E after pruning",
    beside="relative E explained",
    reading="B2 'relative emergence tends to be larger in pruned networks', against a null "
            "that has the same parameters"))
CLAIMS.add(Claim(
    "relative_E_vs_dense",
    "Pruning raises relative emergence beyond a dense network of the pruned size: E per "
    "parameter summed over the epochs after pruning, against the unpruned network of the same "
    f"seed whose parameter count is within {SIZE_MATCH:.0%} of the pruned one's (another width; "
    "as % change)", +1, "% change in rel. E vs dense",
    lambda g, h, e, r: summed_log_ratio(g, h, r, per_param=True, refs=dense_references(g)),
    "more E per parameter than a dense network with as many parameters",
    "needs unpruned networks of the pruned sizes in the sweep (experiment=paper_fmnist_dense); "
    "under the paper's units counting an unstructured-pruned network keeps all its units (its "
    "paths) where the narrower dense one has fewer: the edges counting (settings table) "
    "counts surviving connections only; the dense one trains from scratch",
    log_scale=True, axis="dense_size", comparison="pruned minus the dense network of its size "
    "(same seed), paired by seed", reads="relative E after pruning",
    reading="B2 'relative emergence ... larger in pruned networks', against a network that has "
            "the same parameter count without being pruned"))
CLAIMS.add(Claim(
    "E_falls_during_training",
    "E falls during training: each run's Spearman correlation of E with the epoch (a control "
    "from epoch 1, a pruned run after pruning), mean per seed", -1, "Spearman ρ",
    lambda g, h, e, r: e_trend(g, h, e), "E goes down as training goes on",
    "a trend in time: any signal that falls with the epoch supports it", per_level=False,
    comparison="within each run; mean per seed", reads="E by epoch",
    reading="A4 'a general trend of decreasing emergence activation'"))
CLAIMS.add(Claim(
    "E_predicts_accuracy",
    f"Higher E goes with a better network: between runs, E at the first epoch after pruning "
    f"predicts the final test accuracy (mean of the last {TAIL} epochs) beyond the test "
    f"accuracy at that epoch (partial Spearman correlation)", +1, "partial ρ",
    meaning="E early predicts the final accuracy beyond early accuracy",
    caveat="between networks (n = runs, not seeds); a clock is the same in every run at one "
           "epoch and cannot support it", per_level=False, evaluate=predicts_accuracy,
    comparison="between runs of a group at one epoch", reads="E and test accuracy",
    test="OLS t-test of rank(E) in rank(final) ~ rank(acc then) + rank(E) (statsmodels); "
         "Holm-corrected",
    reading="A1/A3 'higher emergence correlates with improved trainability and performance', "
            "'a robust predictor of network performance'"))
