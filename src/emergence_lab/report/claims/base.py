"""What a claim is, and how the pruning claims pair runs.

A claim is one registered entry: its statement in plain words, one line of meaning, what it
reads (which curve or measurement), which reading of the paper it takes, the measure, the
claimed direction, the test, the Holm family and the caveat printed beside its verdict. Most
claims give each run an effect in the claim's unit (`measure`), paired with a reference run of
the same group and seed (the control, or another strategy at the same amount: `against`), and
test the per-seed effects; a claim that needs another test gives its own `evaluate`. Adding a
claim is one `CLAIMS.add(...)` in a module of this package; the tables follow from the entries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from emergence_lab.registry import Registry
from emergence_lab.report import stats
from emergence_lab.report.table import TAIL, tail_len  # noqa: F401 - claims read it here

HOLM_FAMILY = ("every test of one group in one analysis setting: each claim at each pruning "
               "level, across levels and its dose-response")  # the one definition every table uses
PAIRED = "pruned minus its control (amount 0, same group and seed), paired by seed"
WITHIN = "within each run, against a clock at the same mean budget; mean per seed"
T_TEST = "one-sample t-test of the per-seed effects against 0 (scipy), Holm-corrected"
TREND = "dose-response (per 10 % pruned)"  # the scope of a claim's trend over the levels
ALL_LEVELS, ALL_RUNS = "all levels", "all runs"

Measure = Callable[[pd.DataFrame, pd.DataFrame, str, str], "pd.Series | pd.DataFrame"]
Test = Callable[["pd.Series | pd.DataFrame"], stats.Paired]
Rows = Iterator[tuple[str, str, stats.Paired]]  # (strategy, scope, test)


def t_test(per_seed: pd.Series) -> stats.Paired:
    """The default test: a one-sample t-test of the per-seed effects against 0."""
    return stats.paired_test(per_seed.tolist())


@dataclass(frozen=True)
class Claim:
    """measure(runs of a group, hist, E key, relative-E key) -> each run's effect (indexed like
    the runs; NaN where the run has no reference); per_level: tested per pruning level, across
    levels and, with `trend`, as a dose-response over the levels (else once over all runs, each
    seed's mean); `evaluate` replaces all of that with the claim's own rows; `axis`: the claim
    compares runs across groups that differ only in this per-run column (a family)."""

    name: str
    statement: str
    direction: int  # the claimed sign of the effect
    unit: str
    measure: Measure | None = None
    meaning: str = ""  # one line a reader of the verdict table needs
    caveat: str = ""  # printed beside the verdict
    log_scale: bool = False  # tested on log ratios, reported as % change
    per_level: bool = True
    comparison: str = PAIRED
    test: str = T_TEST
    family: str = HOLM_FAMILY
    reads: str = ""  # which curve or measurement the verdict reads
    reading: str = ""  # which reading of the paper the verdict takes (its claim ids, its words)
    against: str = "control"  # the reference arm: the control, or a strategy at the same amount
    trend: bool = False  # also the dose-response over the pruning levels
    seed_test: Test = t_test
    evaluate: Callable[[Claim, pd.DataFrame, pd.DataFrame, str, str], Rows] | None = None
    axis: str | None = None
    beside: str = ""  # what the verdict table puts beside it: "paper accuracy" (the paper's own
    # change in final accuracy), "relative E explained" (the decomposition's note)

    @property
    def reads_e(self) -> bool:
        """Whether the claim reads E (it is then recomputed in every analysis setting)."""
        return re.search(r"\bE\b", self.reads) is not None

    def rows(self, g: pd.DataFrame, hist: pd.DataFrame, e_key: str, rel_key: str) -> Rows:
        if self.evaluate is not None:
            return self.evaluate(self, g, hist, e_key, rel_key)
        return paired_rows(self, g, hist, e_key, rel_key)


def by_seed(runs: pd.DataFrame, values: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
    """The mean of values over each seed's runs (seeds are the replicates)."""
    return values.groupby(runs.seed.to_numpy()).mean().dropna(how="all")


def trend_by_seed(runs: pd.DataFrame, effect: pd.Series, x: pd.Series, scale: float = 0.1
                  ) -> pd.Series:
    """Per seed, the least-squares slope of the effect on x (times `scale`: per 10 % pruned for
    amounts), over that seed's runs with an effect; NaN below two distinct x."""
    out = {}
    for seed, idx in runs.groupby("seed").groups.items():
        xs, ys = x[idx].astype(float), effect[idx].astype(float)
        ok = ys.notna() & xs.notna()
        if xs[ok].nunique() >= 2:
            out[seed] = float(np.polyfit(xs[ok], ys[ok], 1)[0]) * scale
    return pd.Series(out, dtype=float)


def paired_rows(claim: Claim, g: pd.DataFrame, hist: pd.DataFrame, e_key: str, rel_key: str
                ) -> Rows:
    """The tests of a paired claim in one group: each pruned strategy (the reference strategy
    itself excepted) at each level, across levels, and the dose-response; or once over all
    runs when the claim is not per level."""
    effect = claim.measure(g, hist, e_key, rel_key)
    if not claim.per_level:
        yield "", ALL_RUNS, claim.seed_test(by_seed(g, effect))
        return
    pruned = g[(g.level > 0) & (g.strategy != claim.against)]
    for strategy, s in pruned.groupby("strategy", sort=True):
        for label, cell in s.groupby("label", sort=False):
            yield strategy, label, claim.seed_test(by_seed(cell, effect.loc[cell.index]))
        if s.level.nunique() > 1:
            yield strategy, ALL_LEVELS, claim.seed_test(by_seed(s, effect.loc[s.index]))
            if claim.trend and isinstance(effect, pd.Series) and s.level.nunique() > 2:
                yield strategy, TREND, t_test(trend_by_seed(s, effect.loc[s.index], s.level))


def references(runs: pd.DataFrame, against: str = "control") -> pd.Series:
    """Each run's reference run id: the control (amount 0) of its group and seed, or (against a
    strategy) that strategy's run of the same group, seed and amount; NaN where there is none,
    and for the reference runs themselves."""
    if against == "control":
        ref = runs[runs.level == 0]
        keys = ["group", "seed"]
    else:
        ref = runs[(runs.strategy == against) & (runs.level > 0)]
        keys = ["group", "seed", "level"]
    table = ref.drop_duplicates(keys).set_index(keys).run_id
    ids = table.reindex(pd.MultiIndex.from_frame(runs[keys])).to_numpy()
    out = pd.Series(ids, index=runs.index, dtype=object)
    return out.where(~runs.run_id.isin(ref.run_id))


def vs_reference(runs: pd.DataFrame, values: pd.Series, against: str = "control",
                 scale: float = 1.0) -> pd.Series:
    """Each run's value minus that of its reference run (`references`), times scale; NaN
    without one."""
    ref = references(runs, against)
    by_id = pd.Series(values.to_numpy(), index=runs.run_id.to_numpy())
    by_id = by_id[~by_id.index.duplicated()]
    theirs = ref.map(by_id).astype(float)
    return (values.astype(float) - theirs) * scale


def vs_control(per_run: pd.DataFrame, values: pd.Series, scale: float = 1.0) -> pd.Series:
    """Each run's value minus that of its control (level 0, same group and seed), times scale,
    the control's own effect included (0); NaN without a control."""
    is_control = per_run.level == 0
    ctrl = pd.Series(values[is_control].to_numpy(),
                     index=pd.MultiIndex.from_frame(per_run.loc[is_control, ["group", "seed"]]))
    ctrl = ctrl[~ctrl.index.duplicated()]
    c = ctrl.reindex(pd.MultiIndex.from_frame(per_run[["group", "seed"]])).to_numpy()
    return pd.Series((values.to_numpy() - c) * scale, index=per_run.index)


def wide(hist: pd.DataFrame, key: str, run_ids: pd.Series) -> pd.DataFrame:
    """One metric as a table: one column per run (by id), one row per step."""
    h = hist[(hist.key == key) & hist.run_id.isin(run_ids)]
    if h.empty:
        return pd.DataFrame(index=pd.Index([], name="step"), columns=list(run_ids), dtype=float)
    return h.pivot_table(index="step", columns="run_id", values="value", aggfunc="last"
                         ).reindex(columns=list(run_ids)).sort_index()


def end_value(hist: pd.DataFrame, runs: pd.DataFrame, key: str) -> pd.Series:
    """Each run's level at the end: the mean of its last tail_len logged epochs of `key`."""
    w = wide(hist, key, runs.run_id)
    ends = {}
    for rid, pe in zip(runs.run_id, runs.final_from, strict=True):
        c = w[rid].dropna() if rid in w else pd.Series(dtype=float)
        n = tail_len(int((c.index > pe).sum()))
        ends[rid] = float(c.iloc[-n:].mean()) if len(c) else np.nan
    return runs.run_id.map(ends).astype(float)


CLAIMS: Registry[Claim] = Registry("claim")
