"""Relative E explained: beside the change in relative E against the unpruned control, the
change in E and in parameters, paired by seed (their log-ratios add up). Against the control the
rise in relative E is mostly the parameter count's; the verdict on relative E is against a
matched null instead (relative_E_vs_random)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.report import stats
from emergence_lab.report.claims.emergence import summed_log_ratio


def log_ratio_after_prune(per_run: pd.DataFrame, hist: pd.DataFrame, key: str,
                          params: bool = False, offset: float = 1.0) -> pd.Series:
    """Per run, the mean over the epochs after pruning of log(v + offset) - log(v_control +
    offset), the control being the amount-0 run of its group and seed, epoch by epoch (a
    geometric mean of the ratios); `params` (v is relative E): of log(v + 1 / n_params), i.e.
    log((E + 1) / n_params), so that the log-ratios of E, of the parameters and of relative E
    add up. NaN without a control."""
    def logs(k: str) -> pd.Series:
        h = hist[hist.key == k].drop_duplicates(["run_id", "step"], keep="last")
        return h.set_index(["run_id", "step"])["value"]

    values = np.log(logs(key) + 1 / logs(mk.PARAMS)) if params else np.log(logs(key) + offset)
    ctrl = per_run[per_run.level == 0].drop_duplicates(["group", "seed"]).set_index(
        ["group", "seed"]).run_id
    by_run = {rid: v.droplevel(0) for rid, v in values.groupby(level=0, sort=False)}
    out = {}
    for rid, group, seed, pe in zip(per_run.run_id, per_run.group, per_run.seed,
                                    per_run.prune_epoch, strict=True):
        c = ctrl.get((group, seed))
        if c is None or rid not in by_run:
            continue
        mine, theirs = by_run[rid], by_run.get(c, pd.Series(dtype=float))
        both = pd.concat([mine, theirs], axis=1, keys=["p", "c"]).dropna()
        both = both[both.index > pe]
        if len(both):
            out[rid] = float((both.p - both.c).mean())
    return per_run.run_id.map(out).astype(float)


def relative_e_explained(per_run: pd.DataFrame, hist: pd.DataFrame,
                         countings: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """Beside the change in relative E, the change in E and in parameters, per group, strategy
    and level, paired by seed: log((E+1)/n) ratio = log(E+1) ratio - log(n) ratio, each as a %
    change with its 95 % interval; countings maps a label (units, edges) to its (E key,
    relative E key). The note
    says when the rise is the parameter count's (E's change is within its interval of 0)."""
    rows = []
    for counting, (e_key, rel_key) in countings.items():
        if not hist.key.eq(e_key).any() or not hist.key.eq(rel_key).any():
            continue
        for group, g in per_run.groupby("group", sort=True):
            e = log_ratio_after_prune(g, hist, e_key)
            rel = log_ratio_after_prune(g, hist, rel_key, params=True)
            n = e - rel
            for (strategy, label), cell in g[g.level > 0].groupby(["strategy", "label"], sort=False):
                tests = {k: stats.paired_test(v[cell.index]) for k, v in
                         (("E", e), ("parameters", n), ("relative E", rel))}
                row = {"counting": counting, "group": group, "strategy": strategy, "pruned": label}
                for k, t in tests.items():
                    row[f"{k} %"] = 100 * math.expm1(t.mean) if not math.isnan(t.mean) else math.nan
                    row[f"{k} CI"] = (100 * math.expm1(t.ci_low), 100 * math.expm1(t.ci_high))
                te, tr = tests["E"], tests["relative E"]
                e_zero = not (te.ci_low > 0 or te.ci_high < 0)
                rel_up = tr.ci_low > 0
                row["note"] = ("the rise in relative E is the parameter count's: E's change is "
                               "within its interval of 0" if e_zero and rel_up else "")
                rows.append(row)
    return pd.DataFrame(rows)


# lowers_E's summary (the ratio of sums, +1 path) beside the summaries it was chosen over
SUMMARIES = {"ratio of sums, +1 path (the verdict's)": ("sum", 1.0),
             "ratio of sums, no offset": ("sum", 0.0),
             "geometric mean of the epochs' ratios, +1 path": ("geometric", 1.0),
             "geometric mean of the epochs' ratios, +100 paths": ("geometric", 100.0)}


def e_summaries(per_run: pd.DataFrame, hist: pd.DataFrame, e_key: str = mk.E) -> pd.DataFrame:
    """The offset's and the summary's effect on lowers_E: per group, strategy and level, the %
    change in E pruned against control (mean over seeds on the log scale, 95 % interval) under
    each of SUMMARIES. A handful of paths where the control has none moves the geometric means
    (every epoch weighs alike, and log(3 + 1) - log(0 + 1) is large) but barely the sums."""
    rows = []
    for group, g in per_run.groupby("group", sort=True):
        effects = {name: summed_log_ratio(g, hist, e_key, offset=off) if kind == "sum"
                   else log_ratio_after_prune(g, hist, e_key, offset=off)
                   for name, (kind, off) in SUMMARIES.items()}
        for (strategy, label), cell in g[g.level > 0].groupby(["strategy", "label"], sort=False):
            row = {"group": group, "strategy": strategy, "pruned": label}
            for name, eff in effects.items():
                t = stats.paired_test(eff[cell.index].groupby(cell.seed).mean().dropna().tolist())
                row[name] = "–" if math.isnan(t.mean) else (
                    f"{100 * math.expm1(t.mean):+.1f} %" + ("" if math.isnan(t.ci_low) else
                    f" [{100 * math.expm1(t.ci_low):+.1f}, {100 * math.expm1(t.ci_high):+.1f}]"))
            rows.append(row)
    return pd.DataFrame(rows)
