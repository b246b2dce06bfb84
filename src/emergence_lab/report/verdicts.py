"""The paper's claims tested on a sweep: effects in natural units, paired by seed, per pruning
level and across levels, Holm-corrected, with a verdict and, when inconclusive, the seeds that
would detect the observed effect. Also the same claims at other thresholds, and whether E says
more than sparsity does. Pure functions on the report's per-run table and metric history.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.report import stats
from emergence_lab.report.claims import (  # noqa: F401 - the claims' measures, re-exported
    ALL_LEVELS,
    ALL_RUNS,
    CLAIMS,
    HOLM_FAMILY,
    TREND,
    near_zero_epoch,
    never_near_zero,
    plateau_effects,
    vs_control,
)
from emergence_lab.report.claims.designs import families

SPARSITY_KEYS = (mk.DEAD_FRAC, mk.ZERO_FRAC, mk.dormant_frac(0),
                 mk.dormant_frac(0.025), mk.dormant_frac(0.1))


def run_correlations(per_run: pd.DataFrame, hist: pd.DataFrame, key: str = mk.E,
                     controls: Sequence[str] = ()) -> pd.Series:
    """Each run's partial Spearman correlation of a metric at an epoch with the test accuracy
    still to come, over its epochs after pruning (the last epoch has nothing to come), the
    ranks of the epoch and of the controls partialled out: within a run both fall with the
    epoch, so a signal that is only the epoch number says nothing here (NaN)."""
    wide = hist[hist.key.isin([key, mk.TEST_ACC, *controls])].pivot_table(
        index=["run_id", "step"], columns="key", values="value")
    out = {}
    for rid, pe in zip(per_run.run_id, per_run.prune_epoch, strict=True):
        if rid not in wide.index.get_level_values(0):
            continue
        w = wide.loc[rid].dropna(subset=[key, mk.TEST_ACC])
        to_come = w[mk.TEST_ACC].iloc[-1] - w[mk.TEST_ACC] if len(w) else w[mk.TEST_ACC]
        sel = (w.index > max(pe, 0)) & (w.index < w.index.max())
        w, to_come = w[sel], to_come[sel]
        if len(w) < 4 + len(controls):
            continue
        ctrl = w[list(controls)].assign(epoch=w.index.to_numpy())
        out[rid] = stats.partial_spearman(w[key], to_come, ctrl)
    return per_run.run_id.map(out).astype(float)


def _by_seed(per_run: pd.DataFrame, values: pd.Series) -> pd.Series:
    """The mean of values over each seed's runs (seeds are the replicates)."""
    return values.groupby(per_run.seed).mean().dropna()


def _correct(table: pd.DataFrame, directions: Sequence[int]) -> None:
    """Adds p_holm (Holm over the tests of each group: HOLM_FAMILY) and each test's verdict,
    in place."""
    table["p_holm"] = np.nan
    for _, idx in table.groupby("group").groups.items():
        table.loc[idx, "p_holm"] = stats.holm(table.loc[idx, "p"].tolist())
    table["verdict"] = [stats.verdict(m, p, d) for m, p, d in
                        zip(table["mean"], table.p_holm, directions, strict=True)]


def _row(group: str, claim: str, item: tuple) -> dict:
    strategy, scope, test, *unit = item
    claim_unit = CLAIMS[claim].unit + (" per 10 % pruned" if scope == TREND else "")
    return {"group": group, "claim": claim, "strategy": strategy, "scope": scope,
            "unit": unit[0] if unit else claim_unit, **test.as_dict()}


def _rows(per_run: pd.DataFrame, hist: pd.DataFrame, e_key: str, rel_key: str,
          which: Sequence[str]) -> list[dict]:
    """Each claim's tests: within each group, or (a claim with an axis) within each family of
    groups that differ only in that axis."""
    rows = []
    for name in which:
        claim = CLAIMS[name]
        split = per_run.group if claim.axis is None else families(per_run, claim.axis)
        if claim.axis is not None and (claim.axis not in per_run
                                       or per_run[claim.axis].nunique() < 2):
            continue  # nothing varies along its axis: the claim has no data here
        for group, g in per_run.groupby(split, sort=True):
            rows += [_row(group, name, item) for item in claim.rows(g, hist, e_key, rel_key)]
    return rows


def claim_tests(per_run: pd.DataFrame, hist: pd.DataFrame, e_key: str = mk.E,
                rel_key: str = mk.RELATIVE, which: Sequence[str] = tuple(CLAIMS.names())
                ) -> pd.DataFrame:
    """One row per (group, claim, strategy, scope): scope is a pruning level (its paired test
    over seeds), "all levels" (the paired test of each seed's mean effect over the levels), the
    dose-response over the levels, "all runs", or a claim's own scopes. Holm's correction runs
    over every test of a group; then the verdict, and for an inconclusive test the seeds that
    would detect its effect at 80 % power. Claims in `which` with no data in these runs (no
    random arm, no α axis) have no row."""
    table = pd.DataFrame(_rows(per_run, hist, e_key, rel_key, which))
    if table.empty:
        return table
    table = table.sort_values("group", kind="stable").reset_index(drop=True)
    _correct(table, [CLAIMS[c].direction for c in table.claim])
    # the seeds to detect the effect at the strictest level Holm could ask of it (alpha / m)
    family = table.groupby("group").p.transform(lambda p: p.notna().sum()).clip(lower=1)
    table["seeds_for_80pct_power"] = [
        stats.seeds_for_power(m, sd, alpha=stats.ALPHA / k) if v == "inconclusive" else math.nan
        for m, sd, v, k in zip(table["mean"], table.sd, table.verdict, family, strict=True)]
    logs = table.claim.map(lambda c: CLAIMS[c].log_scale)
    for col in ("mean", "ci_low", "ci_high"):  # tested on log ratios, read as % change
        table.loc[logs, col] = 100 * np.expm1(table.loc[logs, col].astype(float))
    table["caveat"] = table.claim.map(lambda c: CLAIMS[c].caveat)
    table["reads"] = table.claim.map(lambda c: CLAIMS[c].reads)
    return table


def headline(tests: pd.DataFrame) -> pd.DataFrame:
    """The verdicts a reader sees first: each claim across levels or over all runs; a claim
    with scopes of its own (measured epochs, design arms) shows each of them."""
    if tests.empty:
        return tests
    keys = [tests.group, tests.claim, tests.strategy.fillna("")]
    summary = tests.scope.isin([ALL_LEVELS, ALL_RUNS])
    has_summary = summary.groupby(keys).transform("any")
    return tests[summary | ~has_summary].reset_index(drop=True)


def effect_text(row: pd.Series, digits: int = 2) -> str:
    """'-12.3 % of control E [-15.0, -9.6]' (the 95 % t-interval), or '–'."""
    if math.isnan(row["mean"]):
        return "–"
    big = max(abs(row["mean"]), 0 if math.isnan(row.ci_high) else abs(row.ci_high))
    fmt = f"+.{digits}f" if big >= 0.1 or big == 0 else "+.3g"  # small units keep 3 digits
    ci = "" if math.isnan(row.ci_low) else f" [{row.ci_low:{fmt}}, {row.ci_high:{fmt}}]"
    censored = row.get("censored", math.nan)
    note = f" ({censored:.0f} target times censored)" if pd.notna(censored) and censored else ""
    return f"{row['mean']:{fmt}} {row.unit}{ci}{note}"


def verdict_text(row: pd.Series) -> str:
    """The verdict, with the seeds an inconclusive effect would need."""
    if row.verdict != "inconclusive":
        return row.verdict
    notes = []
    if row.p < stats.ALPHA:  # the plain interval excludes 0; the correction does not let it
        notes.append(f"after Holm; p = {row.p:.2g} uncorrected")
    need = row.get("seeds_for_80pct_power", math.nan)
    if not math.isnan(need):
        notes.append(f"≈{need:.0f} seeds for 80 % power" if math.isfinite(need)
                     else "no effect to detect")
    return "inconclusive" + (f" ({'; '.join(notes)})" if notes else "")


def sensitivity(per_run: pd.DataFrame, hist: pd.DataFrame, keys: dict[str, tuple[str, str]]
                ) -> pd.DataFrame:
    """The E-based claims recomputed in each analysis setting: keys maps a label such as
    'mean θ=0.05, edges' to its (E key, relative E key). One row per label, group and
    strategy, with the setting's rule, θ and counting."""
    rows = []
    for label, (e_key, rel_key) in keys.items():
        if not hist.key.isin([e_key]).any():
            continue
        s = mk.setting_of(e_key)
        # the whole family (every claim of the group), as in the main table: one test, one p_holm
        every = claim_tests(per_run, hist, e_key, rel_key)
        t = headline(every[every.claim.map(lambda c: CLAIMS[c].reads_e)]) if not every.empty \
            else every
        for _, r in t.iterrows():
            rows.append({"setting": label, "rule": s.rule, "theta": s.theta,
                         "counting": s.counting, "group": r.group, "strategy": r.strategy,
                         "claim": r.claim, "mean": r["mean"], "p": r.p, "p_holm": r.p_holm,
                         "verdict": r.verdict if r.verdict != "inconclusive" or not r.p < stats.ALPHA
                         else "inconclusive after Holm",
                         "ci_low": r.ci_low, "ci_high": r.ci_high, "unit": r.unit, "n": r.n})
    return pd.DataFrame(rows)


def sparsity_controls(per_run: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    """Is E just sparsity? Per group, the Spearman correlation of each signal with the accuracy
    still to come (each run's epochs after pruning, mean over seeds): E, E with the sparsity
    baselines partialled out, and each baseline. Holm within each group."""
    present = [k for k in SPARSITY_KEYS if hist.key.eq(k).any()]
    # (relative E would repeat E: within a run after pruning it is E over a constant)
    signals = [("E", mk.E, ()), ("E | sparsity baselines", mk.E, present)]
    signals += [(k.removeprefix("sparsity/"), k, ()) for k in present]
    rows = []
    for group, g in per_run.groupby("group", sort=True):
        for name, key, ctrl in signals:
            if ctrl == [] and "|" in name:
                continue  # no baselines logged (runs from before they were)
            test = stats.paired_test(_by_seed(g, run_correlations(g, hist, key, ctrl)))
            rows.append({"group": group, "signal": name, **test.as_dict()})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    _correct(table, [+1] * len(table))
    return table


LOWER = -1  # the best-lr table's claim: pruned below its control (as the cost of accuracy)


def best_lr(per_run: pd.DataFrame) -> pd.DataFrame:
    """The re-tuned learning rate: per base group and cell, the lr after pruning with the best
    mean final accuracy, and each pruned level at its best against the control at its best
    (final accuracy, points, paired by seed; Holm within the base group). Empty unless the
    lr after pruning varies."""
    if "lr_after" not in per_run or per_run.lr_after.nunique() < 2:
        return pd.DataFrame()
    rows = []
    for base, g in per_run.groupby("base_group", sort=True):
        means = g.groupby(["label", "lr_after"]).final_acc.mean()
        best = {label: means[label].idxmax() for label in means.index.get_level_values(0).unique()}
        if not (g.level == 0).any():
            continue
        ctrl_label = g[g.level == 0].label.iloc[0]
        ctrl = g[(g.label == ctrl_label) & (g.lr_after == best[ctrl_label])].set_index("seed").final_acc
        for label in dict.fromkeys(g.sort_values("order").label):
            if label == ctrl_label:
                continue
            cell = g[(g.label == label) & (g.lr_after == best[label])].set_index("seed").final_acc
            diff = (100 * (cell - ctrl.reindex(cell.index))).tolist()
            test = stats.paired_test(diff)
            rows.append({"group": base, "pruned": label, "best_lr": best[label],
                         "final_at_best": 100 * cell.mean(), "control_best_lr": best[ctrl_label],
                         "control_final_at_best": 100 * ctrl.mean(), "unit": "points",
                         **test.as_dict()})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    _correct(table, [LOWER] * len(table))
    return table

