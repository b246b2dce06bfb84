"""Speed and level apart: how fast each run rises to its own plateau after pruning, when it
reaches accuracy targets both arms reach (censored times as time-to-event), where it ends, the
compound "faster but lower", the generalization gap and the final training loss. Speed reads
the training curves (trainability, as the paper's figures plot); the level reads the held-out
(test) accuracy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.duration.survfunc import SurvfuncRight

from emergence_lab.measure import keys as mk
from emergence_lab.report import stats
from emergence_lab.report.claims.base import (
    CLAIMS,
    TAIL,
    Claim,
    end_value,
    references,
    tail_len,
    vs_reference,
    wide,
)
from emergence_lab.report.table import GAIN, own_gain_epochs

LADDER = (0.5, 0.75, 0.9)  # reaches_targets_sooner: shares of the gain both arms reach
EARLY = 3  # faster_but_lower: "ahead" is the mean over this many epochs after pruning


def convergence_epochs(g: pd.DataFrame, hist: pd.DataFrame, key: str = mk.TRAIN_ACC
                       ) -> pd.Series:
    """Each run's epochs to GAIN of its own post-pruning gain (own_gain_epochs on `key`)."""
    w = wide(hist, key, g.run_id)
    return pd.Series([own_gain_epochs(w[rid], pe) for rid, pe in zip(g.run_id, g.final_from,
                                                                     strict=True)],
                     index=g.index, dtype=float)


def rmst(times: np.ndarray, events: np.ndarray, horizon: float) -> float:
    """The restricted mean time to the event up to `horizon`: the area under the Kaplan-Meier
    curve (statsmodels' SurvfuncRight, right-censored times) from 0 to the horizon."""
    km = SurvfuncRight(times.astype(float), events.astype(float))
    steps = np.concatenate([[0.0], km.surv_times, [horizon]])
    surv = np.concatenate([[1.0], km.surv_prob])
    return float(np.sum(surv * np.diff(np.clip(steps, 0, horizon))))


def _times(curve: pd.Series, targets: list[float], after: int, horizon: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Epochs after `after` until the curve first reaches each target, and whether it did (a
    target never reached is censored at the horizon)."""
    post = curve[curve.index > after]
    times, events = [], []
    for t in targets:
        hit = post[post >= t - 1e-12]
        times.append(float(hit.index[0] - after) if len(hit) else float(horizon))
        events.append(1 if len(hit) else 0)
    return np.asarray(times), np.asarray(events)


def target_ladder(g: pd.DataFrame, hist: pd.DataFrame, key: str = mk.TRAIN_ACC
                  ) -> pd.DataFrame:
    """Per run: the difference in restricted mean time (epochs, Kaplan-Meier) to a ladder of
    targets that both it and its control reach (LADDER shares of the gain from their start at
    the pruning epoch to the lower of their two plateaus), its minus the control's; and how
    many of its and the control's target times were censored."""
    w, ref = wide(hist, key, g.run_id), references(g)
    out = pd.DataFrame(np.nan, index=g.index, columns=["effect", "censored"])
    for idx, rid, c, pe in zip(g.index, g.run_id, ref, g.final_from, strict=True):
        if not isinstance(c, str) or c not in w:
            continue
        mine, theirs = w[rid].dropna(), w[c].dropna()
        if mine.empty or theirs.empty:
            continue
        start = theirs.get(pe, mine.get(pe, math.nan))
        horizon = int(min(mine.index.max(), theirs.index.max())) - pe
        n = tail_len(horizon)
        lower = min(float(mine.iloc[-n:].mean()), float(theirs.iloc[-n:].mean()))
        if not lower - start > 1e-9 or horizon < 1:
            continue
        targets = [start + s * (lower - start) for s in LADDER]
        (tp, ep), (tc, ec) = (_times(x, targets, pe, horizon) for x in (mine, theirs))
        out.loc[idx] = [rmst(tp, ep, horizon) - rmst(tc, ec, horizon),
                        int((ep == 0).sum() + (ec == 0).sum())]
    return out


def bootstrap_test(per_seed: pd.DataFrame | pd.Series) -> stats.Paired:
    """The t-test of the per-seed effects, with the 95 % interval of a paired bootstrap over
    seeds (scipy, percentile); p is the larger of the t-test's and the bootstrap's, so a
    verdict is decided only when both intervals exclude 0. Censored target times summed."""
    censored = float(per_seed["censored"].sum()) if isinstance(per_seed, pd.DataFrame) else math.nan
    d = (per_seed["effect"] if isinstance(per_seed, pd.DataFrame) else per_seed).dropna()
    t = stats.paired_test(d.tolist())
    t.censored = censored
    if t.n < 2 or t.sd == 0:
        return t
    boot = sps.bootstrap((d.to_numpy(),), np.mean, method="percentile", n_resamples=4999,
                         random_state=np.random.default_rng(0), vectorized=True)
    dist = boot.bootstrap_distribution
    p_boot = min(1.0, 2 * min(float((dist <= 0).mean()), float((dist >= 0).mean())))
    t.ci_low, t.ci_high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    t.p = max(t.p, p_boot)
    return t


def early_and_end(g: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    """Per run, in points: how far ahead of its control it is over the EARLY epochs after
    pruning (training accuracy) and how far below its control it ends (test accuracy, the
    mean of the last epochs): both positive is the paper's "faster but lower"."""
    w, ref = wide(hist, mk.TRAIN_ACC, g.run_id), references(g)
    ahead = []
    for rid, c, pe in zip(g.run_id, ref, g.final_from, strict=True):
        if not isinstance(c, str) or c not in w:
            ahead.append(math.nan)
            continue
        d = (w[rid] - w[c]).dropna()
        d = d[d.index > pe].iloc[:EARLY]
        ahead.append(100 * float(d.mean()) if len(d) else math.nan)
    lower = -vs_reference(g, end_value(hist, g, mk.TEST_ACC), scale=100)
    return pd.DataFrame({"ahead": ahead, "lower": lower.to_numpy()}, index=g.index)


def intersection_union(per_seed: pd.DataFrame) -> stats.Paired:
    """Both parts must hold (an intersection-union test: p is the larger of the two t-tests').
    Both means positive: the part with the larger p binds (its mean and interval); else the
    part that fails (the smaller p of the non-positive ones), which can contradict."""
    parts = [stats.paired_test(per_seed[c].dropna().tolist()) for c in ("ahead", "lower")]
    if any(math.isnan(p.mean) for p in parts):
        return stats.Paired(n=min(p.n for p in parts))
    if all(p.mean > 0 for p in parts):
        binding = max(parts, key=lambda p: (p.p, -p.mean))
        return stats.Paired(binding.n, binding.mean, binding.ci_low, binding.ci_high,
                            max(p.p for p in parts), binding.sd)
    return min((p for p in parts if p.mean <= 0), key=lambda p: p.p)


def _test_acc_vs_control(g, h, e, r):
    return vs_reference(g, end_value(h, g, mk.TEST_ACC), scale=100)


CLAIMS.add(Claim(
    "speeds_convergence",
    "Pruning speeds convergence: after pruning, each run rises to its own plateau faster "
    f"(epochs from the pruning epoch until the training accuracy has made {GAIN:.0%} of its own "
    f"gain, plateau = the mean of its last {TAIL} epochs; pruned minus control)", -1, "epochs",
    lambda g, h, e, r: vs_reference(g, convergence_epochs(g, h)),
    "rises to its own plateau sooner (training accuracy)",
    "a lower plateau is reached sooner for the same curve shape (reaches_targets_sooner and "
    "faster_but_lower are not fooled by it)", trend=True, reads="training accuracy",
    reading="B3 'pruning leads to faster convergence': the rate to each run's own plateau"))
CLAIMS.add(Claim(
    "reaches_targets_sooner",
    "Pruning reaches accuracy targets sooner: the restricted mean time (Kaplan-Meier, "
    "statsmodels) to a ladder of training-accuracy targets that both arms reach "
    f"({', '.join(f'{s:.0%}' for s in LADDER)} of the gain from the pruning epoch to the lower "
    "of the two plateaus), pruned minus control; a target not reached is censored", -1, "epochs",
    lambda g, h, e, r: target_ladder(g, h), "reaches targets both arms reach sooner (training acc.)",
    "a curve that is its control's cut off lower reaches every shared target at the same "
    "epoch: never sooner", trend=True, reads="training accuracy",
    test="paired t-test over seeds and a paired bootstrap (scipy, percentile): decided when "
         "both exclude 0; Holm-corrected", seed_test=bootstrap_test,
    reading="B3 read as time to the same accuracy, apart from where each run ends"))
CLAIMS.add(Claim(
    "costs_accuracy",
    f"Pruning costs final accuracy (test accuracy, the mean of the last {TAIL} epochs, pruned "
    "minus control)", -1, "points", _test_acc_vs_control,
    "ends lower (test accuracy)", trend=True,
    reads=f"test accuracy (mean of the last {TAIL} epochs)", beside="paper accuracy",
    reading="B4 'a reduction in final accuracy'"))
CLAIMS.add(Claim(
    "faster_but_lower",
    f"Pruned networks converge faster but end lower: ahead of the control over the {EARLY} "
    f"epochs after pruning (training accuracy) and below it at the end (test accuracy, last "
    f"{TAIL} epochs), both at once", +1, "points (weaker part)",
    lambda g, h, e, r: early_and_end(g, h), "ahead early and lower at the end, both",
    "an intersection-union test: its effect is the weaker part's, ahead early (points) or "
    "lower at the end (points)", test="intersection-union: both paired t-tests, p the larger; "
    "Holm-corrected", seed_test=intersection_union, reads="training accuracy early, test "
    "accuracy at the end", reading="B3 and B4 together, as P:236 states them"))
CLAIMS.add(Claim(
    "narrows_generalization_gap",
    f"Pruning narrows the generalization gap (training minus test accuracy, the mean of the "
    f"last {TAIL} epochs, pruned minus control)", -1, "points",
    lambda g, h, e, r: vs_reference(g, end_value(h, g, mk.TRAIN_ACC) - end_value(
        h, g, mk.TEST_ACC), scale=100),
    "a smaller train-test gap at the end", reads="training and test accuracy",
    reading="B8 'enhance their learning and generalization capabilities'"))
CLAIMS.add(Claim(
    "higher_final_train_loss",
    f"The unpruned network finds lower minima: the pruned run ends at a higher training loss "
    f"(the mean of its last {TAIL} epochs, pruned minus control)", +1, "loss",
    lambda g, h, e, r: vs_reference(g, end_value(h, g, mk.TRAIN_LOSS)),
    "ends at a higher training loss",
    "needs the training loss (train/loss; the tidy table's optional train_loss column)",
    reads="training loss", reading="C4 'the nonpruned network would find a lower minima'"))
