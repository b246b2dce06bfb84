"""The plateau claim, split: when E has fallen to near zero, is there little left to gain
(absolute), and does E stop better than a clock at the same budget?"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.report.claims.base import CLAIMS, WITHIN, Claim
from emergence_lab.report.table import curve

NEAR_ZERO = 0.01  # E at or below this share of its peak after pruning is "near zero"
MUCH_MORE = 1.0  # points of accuracy: more than this still to come is "improving much more"


def near_zero_epoch(e: pd.Series, prune_epoch: int) -> int | None:
    """The first epoch after pruning at which E is near zero (<= NEAR_ZERO of its peak over the
    epochs after pruning; 0 if the peak is 0), None if it never is."""
    post = e[e.index > prune_epoch]
    if post.empty:
        return None
    hit = post[post <= NEAR_ZERO * max(float(post.max()), 0.0)]
    return int(hit.index[0]) if len(hit) else None


def never_near_zero(per_run: pd.DataFrame, hist: pd.DataFrame, e_key: str = mk.E) -> list[str]:
    """The runs whose E never gets near zero after pruning (the plateau claims cannot use them)."""
    return [name for rid, name, pe in zip(per_run.run_id, per_run.name, per_run.prune_epoch,
                                          strict=True)
            if near_zero_epoch(curve(hist, rid, e_key), pe) is None]


def _left(per_run: pd.DataFrame, hist: pd.DataFrame, e_key: str, acc_key: str
          ) -> tuple[dict[str, float], dict[str, float]]:
    """Per run whose E gets near zero: the points still to come then, and those a clock that
    stops every run of the group at the mean near-zero epoch leaves."""
    stops = {rid: near_zero_epoch(curve(hist, rid, e_key), pe)
             for rid, pe in zip(per_run.run_id, per_run.prune_epoch, strict=True)}
    reached = [t for t in stops.values() if t is not None]
    left_e, left_clock = {}, {}
    if not reached:
        return left_e, left_clock
    clock = round(float(np.mean(reached)))
    for rid, t in stops.items():
        acc = curve(hist, rid, acc_key)
        if t is None or acc.empty:
            continue
        final, at_clock = float(acc.iloc[-1]), acc[acc.index <= clock]
        left_e[rid] = 100 * (final - float(acc.get(t, math.nan)))
        left_clock[rid] = 100 * (final - float(at_clock.iloc[-1])) if len(at_clock) else math.nan
    return left_e, left_clock


def _acc_key(g: pd.DataFrame) -> str:
    return g.selection_key.iloc[0] if "selection_key" in g and len(g) else mk.TEST_ACC


def plateau_effects(per_run: pd.DataFrame, hist: pd.DataFrame, e_key: str = mk.E,
                    acc_key: str = mk.TEST_ACC) -> pd.Series:
    """Per run, in points: the accuracy still to come (final minus then) when E first reaches
    near zero, minus min(MUCH_MORE, what a clock leaves), the clock stopping every run of the
    group at one epoch, the mean of the runs' near-zero epochs (the same budget). A signal
    that is the same function of the epoch in every run stops where the clock does, so its
    effect is never below 0. NaN for a run whose E never gets near zero."""
    left_e, left_clock = _left(per_run, hist, e_key, acc_key)
    out = {rid: v - min(MUCH_MORE, left_clock[rid]) for rid, v in left_e.items()}
    return per_run.run_id.map(out).astype(float)


def little_left(per_run: pd.DataFrame, hist: pd.DataFrame, e_key: str = mk.E,
                acc_key: str = mk.TEST_ACC) -> pd.Series:
    """Per run, the points still to come when E first reaches near zero, minus MUCH_MORE:
    below 0 when less than MUCH_MORE point is left. NaN when E never gets near zero."""
    left_e, _ = _left(per_run, hist, e_key, acc_key)
    return per_run.run_id.map({rid: v - MUCH_MORE for rid, v in left_e.items()}).astype(float)


ONLY_NEAR_ZERO = "only runs whose E gets near zero count (the others are listed)"
CLAIMS.add(Claim(
    "E_zero_little_left",
    f"When E has fallen to near zero (<= {NEAR_ZERO:.0%} of its peak after pruning), little "
    f"accuracy is left to gain: the points still to come then, minus {MUCH_MORE:g} point "
    f"(each run; mean over seeds)", -1, "points",
    lambda g, h, e, r: little_left(g, h, e, _acc_key(g)),
    f"less than {MUCH_MORE:g} point still to come once E is near zero",
    ONLY_NEAR_ZERO + "; a late enough clock passes it too (E_zero_beats_clock asks more)",
    per_level=False, comparison="within each run; mean per seed", reads="E and test accuracy",
    reading="A6 'zero emergence is a reliable indicator that the network will not experience "
            "future significant improvements', absolute"))
CLAIMS.add(Claim(
    "E_zero_beats_clock",
    f"E near zero marks the plateau better than a clock at the same budget: the points still "
    f"to come when E first reaches near zero, minus min({MUCH_MORE:g}, what a clock that "
    f"stops every run at one epoch, the same mean budget, leaves) (each run; mean over seeds)",
    -1, "points", lambda g, h, e, r: plateau_effects(g, h, e, _acc_key(g)),
    "E near zero leaves less to come than a clock", ONLY_NEAR_ZERO, per_level=False,
    comparison=WITHIN, reads="E and test accuracy",
    reading="A6 'marking an optimal point to terminate training', against a clock"))
