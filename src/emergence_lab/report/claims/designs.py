"""Claims read across groups that differ in one design axis: the emergence-promoting
initialization's α (experiment=emergence_init), the epoch of pruning (experiment=later_pruning)
and pretraining before pruning (experiment=paper_transfer). Each compares the runs of a family:
the groups that are the same but for the axis (`families`)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.report import stats
from emergence_lab.report.claims.base import (
    CLAIMS,
    Claim,
    Rows,
    by_seed,
    end_value,
    t_test,
    trend_by_seed,
    vs_reference,
    wide,
)
from emergence_lab.report.claims.emergence import SIZE_MATCH, dense_references

# the per-run column of each axis, and the config fields in a group's label it replaces
AXES = {"init_alpha": ("init.alpha",), "prune_epoch": ("pruning.epoch",),
        "pretrained": ("pretrain.", "model."), "dense_size": ("model.",)}


def families(per_run: pd.DataFrame, axis: str) -> pd.Series:
    """Each run's family for an axis: its group's label without the axis' fields. A table
    whose groups do not name the axis (a tidy table with one group per value, or one group)
    is one family when no family would otherwise hold two values of the axis."""
    fields = "|".join(re.escape(f) for f in AXES[axis])
    pattern = re.compile(rf"(^|, )(?!model\.name=)(?:{fields})[^=,]*=(?:\[[^\]]*\]|[^,]*)")
    fam = per_run.group.astype(str).map(lambda s: pattern.sub("", s).strip(", ") or "all runs")
    if axis in per_run and not (per_run.groupby(fam)[axis].nunique() > 1).any():
        fam = pd.Series("all runs", index=per_run.index)
    return fam


def init_trend(claim: Claim, f: pd.DataFrame, hist: pd.DataFrame, e_key: str, rel_key: str
               ) -> Rows:
    """Per seed, the slope of the test accuracy on α (per +0.1) over the unpruned runs, at the
    end and after the first epoch; t-test over seeds."""
    runs = f[f.level == 0]
    acc = wide(hist, mk.TEST_ACC, runs.run_id)
    first = runs.run_id.map(lambda r: 100 * acc[r].get(1, math.nan) if r in acc else math.nan)
    for scope, y in (("final accuracy", 100 * end_value(hist, runs, mk.TEST_ACC)),
                     ("accuracy after epoch 1", first.astype(float))):
        yield "", scope, t_test(trend_by_seed(runs, y, runs.init_alpha))


def later_pruning(claim: Claim, f: pd.DataFrame, hist: pd.DataFrame, e_key: str, rel_key: str
                  ) -> Rows:
    """Per strategy, per seed: the slope over the pruning epoch (per epoch later) of the final
    test accuracy against the control of its own group (each seed's mean over the levels)."""
    effect = vs_reference(f, end_value(hist, f, mk.TEST_ACC), scale=100)
    pruned = f[f.level > 0]
    for strategy, s in pruned.groupby("strategy", sort=True):
        means = s.assign(effect=effect[s.index]).groupby(["seed", "prune_epoch"], as_index=False
                                                         ).effect.mean()
        yield strategy, "per epoch later", t_test(trend_by_seed(means, means.effect,
                                                                means.prune_epoch, scale=1.0))


def _as_pct(test: stats.Paired, unit: str) -> stats.Paired:
    if unit.startswith("%"):  # tested on log ratios, read as % change
        for k in ("mean", "ci_low", "ci_high"):
            setattr(test, k, 100 * math.expm1(getattr(test, k)))
    return test


def pretrained_vs_random(claim: Claim, f: pd.DataFrame, hist: pd.DataFrame, e_key: str,
                         rel_key: str) -> Rows:
    """At each amount (dense, pruned): pretrained minus randomly initialized, paired by seed,
    the final test accuracy (points) and E summed over the epochs (as % change); and where the
    sweep has it, the pretrained pruned network minus the randomly initialized dense network
    of its size (the paper's control "of both sizes")."""
    e = wide(hist, e_key, f.run_id)
    e_sum = f.run_id.map(lambda r: float(e[r].dropna().loc[1:].sum()) + 1 if r in e else math.nan)
    values = {"accuracy": (100 * end_value(hist, f, mk.TEST_ACC), "points"),
              "E": (np.log(e_sum.astype(float)), "% change in E")}
    largest = f.dense_size.max() if "dense_size" in f else math.nan
    small = (f.level == 0) & (f.dense_size < largest * (1 - SIZE_MATCH)) if "dense_size" in f \
        else pd.Series(False, index=f.index)
    for level, cell in f[~small].groupby("level", sort=True):
        name = "dense" if level == 0 else f"pruned {level:.0%}"
        for what, (v, unit) in values.items():
            mine = v.loc[cell.index]
            pre, rnd = (by_seed(cell[cell.pretrained == k], mine[cell.pretrained == k])
                        for k in (1, 0))
            yield "", f"{name}: {what}", _as_pct(stats.paired_test((pre - rnd).dropna().tolist()),
                                                 unit), unit
    pairs = pd.concat([f[(f.level > 0) & (f.pretrained == 1)], f[small & (f.pretrained == 0)]])
    refs = dense_references(pairs).dropna()
    for what, (v, unit) in values.items():
        if refs.empty:
            break
        by_id = pd.Series(v.to_numpy(), index=f.run_id.to_numpy())
        diff = v.loc[refs.index] - refs.map(by_id).astype(float)
        per_seed = diff.groupby(f.seed.loc[refs.index].to_numpy()).mean()
        yield "", f"pruned vs random-init dense of its size: {what}", _as_pct(
            stats.paired_test(per_seed.dropna().tolist()), unit), unit


CLAIMS.add(Claim(
    "emergence_init_improves_accuracy",
    "The emergence-promoting initialization improves accuracy: per seed, the slope of the test "
    "accuracy over init.alpha (per +0.1), at the end (mean of the last epochs) and after the "
    "first epoch", +1, "points per +0.1 α",
    meaning="more α (more E at the start), higher accuracy", evaluate=init_trend,
    axis="init_alpha", per_level=False, comparison="across init.alpha within each seed",
    caveat="needs runs that differ in init.alpha (experiment=emergence_init); unpruned runs",
    reads="test accuracy", reading="A1/A2 'higher emergence correlates with improved "
    "trainability and performance', through the initialization that raises E"))
CLAIMS.add(Claim(
    "later_pruning_helps",
    "Pruning pays only after adequate training: per seed, the slope of the pruning effect on "
    "the final test accuracy (pruned minus its control) over the pruning epoch", +1,
    "points per epoch later", meaning="the later the pruning, the smaller its cost",
    evaluate=later_pruning, axis="prune_epoch", per_level=False,
    comparison="across pruning.epoch within each seed",
    caveat="needs runs pruned at several epochs (experiment=later_pruning)",
    reads="test accuracy", reading="B7 'only realized when pruning is conducted after an "
    "appropriate amount of training'"))
CLAIMS.add(Claim(
    "pretraining_raises_E_and_accuracy",
    "Pretrained networks (MNIST, then Fashion-MNIST) have more E and a higher accuracy than "
    "randomly initialized ones, dense and pruned: pretrained minus random init, paired by seed",
    +1, "points or % change in E", meaning="pretraining raises both E and accuracy",
    evaluate=pretrained_vs_random, axis="pretrained", per_level=False,
    comparison="pretrained minus randomly initialized at the same amount, paired by seed",
    caveat="needs experiment=paper_transfer (the 2x2: pretrain x pruning); the dense control "
           "of the pruned size is not in it", reads="test accuracy and E",
    reading="C3 'the randomly initialized networks exhibited lower emergence and accuracy'"))
