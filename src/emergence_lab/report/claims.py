"""The paper's claims, one registered entry each: its statement in plain words, one line of
meaning, the measure (a pure function of the per-run table and the metric history giving each
run's effect in the claim's unit), the comparison, the claimed direction, the test, the Holm
family, and the caveat printed beside its verdict. Adding a claim is one `CLAIMS.add(...)`;
the tables and figures follow from the entries (verdicts.claim_tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.registry import Registry
from emergence_lab.report.table import curve

HOLM_FAMILY = ("every test of one group in one analysis setting: each claim at each pruning "
               "level and across levels")  # the one definition every table uses
PAIRED = "pruned minus its control (amount 0, same group and seed), paired by seed"
WITHIN = "within each run, against a clock at the same mean budget; mean per seed"
T_TEST = "one-sample t-test of the per-seed effects against 0 (scipy), Holm-corrected"

Measure = Callable[[pd.DataFrame, pd.DataFrame, str, str], pd.Series]


@dataclass(frozen=True)
class Claim:
    """measure(per_run, hist, E key, relative-E key) -> each run's effect (indexed like
    per_run); per_level: tested per pruning level and across levels (else over all runs)."""

    name: str
    statement: str
    direction: int  # the claimed sign of the effect
    unit: str
    measure: Measure
    meaning: str = ""  # one line a reader of the verdict table needs
    caveat: str = ""  # printed beside the verdict
    log_scale: bool = False  # tested on log ratios, reported as % change
    per_level: bool = True
    comparison: str = PAIRED
    test: str = T_TEST
    family: str = HOLM_FAMILY


def log_ratio_after_prune(per_run: pd.DataFrame, hist: pd.DataFrame, key: str,
                          params: bool = False) -> pd.Series:
    """Per run, the mean over the epochs after pruning of log(v + 1) - log(v_control + 1), the
    control being the amount-0 run of its group and seed, epoch by epoch; `params` (v is
    relative E): of log(v + 1 / n_params), i.e. log((E + 1) / n_params), so that the
    log-ratios of E, of the parameters and of relative E add up. NaN without a control."""
    def logs(k: str) -> pd.Series:
        h = hist[hist.key == k].drop_duplicates(["run_id", "step"], keep="last")
        return h.set_index(["run_id", "step"])["value"]

    values = np.log(logs(key) + 1 / logs(mk.PARAMS)) if params else np.log(logs(key) + 1)
    ctrl = per_run[per_run.level == 0].drop_duplicates(["group", "seed"]).set_index(
        ["group", "seed"]).run_id
    out = {}
    for rid, group, seed, pe in zip(per_run.run_id, per_run.group, per_run.seed,
                                    per_run.prune_epoch, strict=True):
        c = ctrl.get((group, seed))
        if c is None or rid not in values.index.get_level_values(0):
            continue
        mine, theirs = values.loc[rid], values.loc[c] if c in values.index.get_level_values(0) \
            else pd.Series(dtype=float)
        both = pd.concat([mine, theirs], axis=1, keys=["p", "c"]).dropna()
        both = both[both.index > pe]
        if len(both):
            out[rid] = float((both.p - both.c).mean())
    return per_run.run_id.map(out).astype(float)


def vs_control(per_run: pd.DataFrame, values: pd.Series, scale: float = 1.0) -> pd.Series:
    """Each run's value minus that of its control (level 0, same group and seed), times
    scale; NaN without a control."""
    is_control = per_run.level == 0
    ctrl = pd.Series(values[is_control].to_numpy(),
                     index=pd.MultiIndex.from_frame(per_run.loc[is_control, ["group", "seed"]]))
    ctrl = ctrl[~ctrl.index.duplicated()]
    c = ctrl.reindex(pd.MultiIndex.from_frame(per_run[["group", "seed"]])).to_numpy()
    return pd.Series((values.to_numpy() - c) * scale, index=per_run.index)


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
    """The runs whose E never gets near zero after pruning (the plateau claim cannot use them)."""
    return [name for rid, name, pe in zip(per_run.run_id, per_run.name, per_run.prune_epoch,
                                          strict=True)
            if near_zero_epoch(curve(hist, rid, e_key), pe) is None]


def plateau_effects(per_run: pd.DataFrame, hist: pd.DataFrame, e_key: str = mk.E,
                    acc_key: str = mk.TEST_ACC) -> pd.Series:
    """Per run, the plateau claim's effect in points: the accuracy still to come (final minus
    then) when E first reaches near zero, minus min(MUCH_MORE, what a clock leaves), the clock
    stopping every run of the group at one epoch, the mean of the runs' near-zero epochs (the
    same budget). A signal that is the same function of the epoch in every run stops where the
    clock does, so its effect is never below 0; E at zero while the accuracy still climbs
    leaves more than the allowance. NaN for a run whose E never gets near zero."""
    stops = {rid: near_zero_epoch(curve(hist, rid, e_key), pe)
             for rid, pe in zip(per_run.run_id, per_run.prune_epoch, strict=True)}
    reached = [t for t in stops.values() if t is not None]
    if not reached:
        return pd.Series(math.nan, index=per_run.index)
    clock = round(float(np.mean(reached)))
    out = {}
    for rid, t in stops.items():
        acc = curve(hist, rid, acc_key)
        if t is None or acc.empty:
            continue
        final = float(acc.iloc[-1])
        at_clock = acc[acc.index <= clock]
        left_e = 100 * (final - float(acc.get(t, math.nan)))
        left_clock = 100 * (final - float(at_clock.iloc[-1])) if len(at_clock) else math.nan
        out[rid] = left_e - min(MUCH_MORE, left_clock)
    return per_run.run_id.map(out).astype(float)


CLAIMS: Registry[Claim] = Registry("claim")
CLAIMS.add(Claim(
    "lowers_E",
    "Pruning lowers absolute emergence E (pruned vs its paired control, epoch by epoch over "
    "the epochs after pruning: the geometric mean of (E + 1) / (E_control + 1), as % change)",
    -1, "% change in E", lambda g, h, e, r: log_ratio_after_prune(g, h, e),
    "E of the pruned network below its control's",
    "a geometric mean weighs every epoch alike and is defined where E is 0; under the paper's "
    "counting routes through pruned weights still count (edges: the settings table)", True))
CLAIMS.add(Claim(
    "raises_relative_E",
    "Pruning raises relative emergence, E per surviving parameter (the same geometric mean of "
    "(E + 1) / parameters, as % change)", +1, "% change in rel. E",
    lambda g, h, e, r: log_ratio_after_prune(g, h, r, params=True),
    "E per parameter above its control's",
    "relative E = E / parameters, and pruning removes parameters: its log-ratio is E's minus "
    "the parameters' ('Relative E explained')", True))
CLAIMS.add(Claim(
    "speeds_convergence",
    "Pruning speeds convergence (epochs after pruning until the run reaches 99 % of its paired "
    "control's final accuracy, a target both share, pruned minus control; a run that never "
    "reaches it counts as one epoch past its last)", -1, "epochs",
    lambda g, h, e, r: vs_control(g, g.epochs_to_common_target.astype(float)),
    "the pruned run reaches its control's level sooner",
    "censored: a run that never reaches the target is never faster"))
CLAIMS.add(Claim(
    "costs_accuracy",
    "Pruning costs final accuracy (final test accuracy, pruned minus control)", -1, "points",
    lambda g, h, e, r: vs_control(g, g.final_acc.astype(float), scale=100),
    "final test accuracy below the control's"))
CLAIMS.add(Claim(
    "E_to_zero_signals_plateau",
    "When E has fallen to near zero (<= 1 % of its peak after pruning), accuracy will not "
    "improve much more: the points of accuracy still to come then, minus what a clock that "
    "stops every run at one epoch (the same mean budget) leaves, up to 1 point (each run; mean "
    "over seeds)", -1, "points",
    lambda g, h, e, r: plateau_effects(g, h, e, g.selection_key.iloc[0]
                                       if "selection_key" in g and len(g) else mk.TEST_ACC),
    "E near zero leaves less to come than a clock",
    "only runs whose E gets near zero count (the others are listed)",
    per_level=False, comparison=WITHIN))
E_CLAIMS = ("lowers_E", "raises_relative_E", "E_to_zero_signals_plateau")  # read E
