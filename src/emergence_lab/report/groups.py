"""Which runs belong together: a group's label from the config fields that differ between runs,
the pruning arm of a run, the paper's protocol, duplicates of one cell (one measurement each),
and which cells of a sweep are missing. Pure functions on the runs table."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import yaml

from emergence_lab.prune.base import PAPER_STRATEGY, STRATEGIES, PruningConfig, describe

# Config fields that never define a group: the comparison axis (every pruning setting but the
# epoch of the first step: the strategies of a group share their control), replicates, how a
# run was executed rather than what it computed, and (any *.data_dir, *.sources, *.download)
# where its data came from.
NOT_GROUPING = {"trainer.seed", "trainer.device", "trainer.num_threads", "trainer.checkpoints"}


NOT_GROUPING_PREFIXES = ("tracking.", "pruning.", "landscape.")  # landscape: an analysis setting


GROUPING = {"pruning.epoch"}


WHERE_DATA_IS = ("data_dir", "sources", "download")


# The paper's section 4 (MLP, one seed): test accuracy after 5 epochs and at the end, in %.
PAPER = {
    "mnist": {"after5": 90.4, "final": {0.0: 95.7, 0.3: 95.7, 0.5: 95.6, 0.7: 95.1}},
    "fashion_mnist": {"after5": 82.0, "final": {0.0: 86.3, 0.3: 87.0, 0.5: 86.8, 0.7: 86.2}},
}


# The paper's section 4.4: its CNN's E at epoch 1 (P:232). Its architecture is not given; ours
# (conv 32, conv 64, dense 128, filters as units) is an assumption.
PAPER_CNN = {"model.name": "cnn", "E_epoch_1": 634_398}


def grouping_fields(runs: pd.DataFrame) -> list[str]:
    """Config fields that vary across the runs and define the groups compared within."""
    fields = [c for c in runs.columns if "." in c and c not in NOT_GROUPING
              and (c in GROUPING or not c.startswith(NOT_GROUPING_PREFIXES))
              and c.rsplit(".", 1)[1] not in WHERE_DATA_IS]
    return sorted(c for c in fields if runs[c].astype(str).nunique(dropna=False) > 1)


def _short_fields(fields: list[str]) -> list[str]:
    """Fields for a readable label: where `X.name` varies, the other `X.*` fields go."""
    named = {f.rsplit(".", 1)[0] for f in fields if f.endswith(".name")}
    return [f for f in fields if f.endswith(".name") or f.rsplit(".", 1)[0] not in named]


def _labels(runs: pd.DataFrame, fields: list[str]) -> pd.Series:
    def label(row: pd.Series) -> str:
        shown = [f"{k}={v}" for k, v in row.items() if not pd.isna(v) and str(v) != "None"]
        return ", ".join(shown) or "all runs"
    return runs[fields].apply(label, axis=1) if fields else pd.Series("all runs", runs.index)


def label_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Adds group (data set, model and the varying fields), level (amount) and seed."""
    out = runs.copy()
    if "dataset_label" in runs and runs["dataset_label"].astype(bool).all():
        runs = runs.assign(**{"dataset.name": runs["dataset_label"]})  # e.g. CIFAR-10 (JPEG q75)
    always = [f for f in ("dataset.name", "model.name") if f in runs]
    fields = always + [f for f in grouping_fields(runs) if f not in always]
    full, short = _labels(runs, fields), _labels(runs, _short_fields(fields))
    # the short label names each group, unless it would merge groups that differ
    distinct = full.groupby(short).nunique().max() <= 1 if len(full) else True
    out["group"] = short if distinct else full
    out["level"] = out.get("pruning.amount", pd.Series(0.0, index=out.index)).astype(float)
    out["seed"] = out.get("trainer.seed", pd.Series(0, index=out.index)).astype(int)
    out["strategy"] = [strategy_name(r) for _, r in out.iterrows()]
    never = [name not in STRATEGIES or not STRATEGIES[name].prunes
             for name in out.get("pruning.name", pd.Series("none", index=out.index))]
    out["prune_epoch"] = np.where(never, 0,
                                  out.get("pruning.epoch", 0)).astype(int)
    steps = out.get("pruning.steps", pd.Series(1, index=out.index)).astype(int)
    interval = out.get("pruning.interval", pd.Series(1, index=out.index)).astype(int)
    # a control's network is final from the first (no-op) step on, whatever schedule it names
    steps = steps.where(out["level"] > 0, 1)
    out["final_from"] = np.where(out["prune_epoch"] > 0,
                                 out["prune_epoch"] + (steps - 1) * interval, 0)
    lr = out.get("trainer.lr", pd.Series(math.nan, index=out.index)).astype(float)
    after = pd.to_numeric(out.get("trainer.lr_after_prune", pd.Series(math.nan, index=out.index)),
                          errors="coerce")  # "None" when unset
    out["lr_after"] = after.fillna(lr)
    return out


def pruning_settings(run: pd.Series) -> object | None:
    """The run's pruning settings, rebuilt from its logged params (None if they do not parse)."""
    entry = STRATEGIES[str(run.get("pruning.name"))] if run.get("pruning.name") in STRATEGIES \
        else None
    if entry is None:
        return None
    given = {f.name: yaml.safe_load(str(run[f"pruning.{f.name}"]))
             for f in dataclasses.fields(entry.settings)
             if f"pruning.{f.name}" in run and not pd.isna(run[f"pruning.{f.name}"])}
    try:
        return entry.settings(**given)
    except (TypeError, ValueError):
        return None


CONTROL = "control"  # the strategy label of an unpruned run (amount 0)


def strategy_name(run: pd.Series) -> str:
    """'control' for amount 0 (every strategy prunes nothing then), else the settings without
    the amount, e.g. 'magnitude', 'magnitude layerwise', 'magnitude x3' (iterative),
    'magnitude x8 cubic' (gradual), 'magnitude x3 rewind1' (lottery ticket), 'SNIP'."""
    if float(run.get("pruning.amount", 0) or 0) == 0:
        return CONTROL
    p = pruning_settings(run)
    return describe(p, sep=" ", amount=False, label=True) if p is not None \
        else str(run.get("pruning.name"))


# The paper's section 4 protocol, as the values its runs have (an absent param: a run from
# before that field existed, when every run had the paper's value), and its table's strategies.
PAPER_PROTOCOL = {"model.name": "mlp", "prune_epoch": 5, "trainer.lr": 0.005, "lr_after": 0.005,
                  "pretrain.epochs": 0, "init.name": "standard"}


# the control and the paper's strategy (prune.base.PAPER_STRATEGY) at its defaults, as labelled
PAPER_STRATEGIES = (CONTROL, describe(PruningConfig(name=PAPER_STRATEGY), sep=" ", amount=False,
                                      label=True))


def _same(value: object, expected: object) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True  # not logged: a run from before the field, which had the paper's value
    try:
        return float(value) == float(expected)
    except (TypeError, ValueError):
        return str(value) == str(expected)


def paper_protocol(run: pd.Series) -> bool:
    """Whether a run follows the paper's section 4 (MLP on MNIST or Fashion-MNIST, global
    magnitude pruning after 5 epochs, lr 0.005, no pretraining, standard init), so that the
    paper's accuracies belong beside it."""
    return (run.get("dataset.name") in PAPER and run.strategy in PAPER_STRATEGIES
            and all(_same(run.get(k), v) for k, v in PAPER_PROTOCOL.items()))


def dedupe(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One run per config_hash: runs with the same hash are one measurement repeated (force=true,
    a retry), never replicates. Keeps the latest FINISHED run of each (else the latest run) and
    describes the others."""
    if runs.empty or "config_hash" not in runs:
        return runs, []
    has_hash = runs.config_hash.astype(str).str.len() > 0
    order = runs.assign(_done=runs.status == "FINISHED").sort_values(["_done", "start_time"])
    keep = order[has_hash.loc[order.index]].groupby("config_hash").tail(1).index.union(
        runs.index[~has_hash])  # the mask in the sorted order: pandas would warn and reindex
    notes = []
    for h, same in runs[has_hash].groupby("config_hash"):
        if len(same) < 2:
            continue
        kept = runs.loc[keep.intersection(same.index)[0]]
        others = ", ".join(f"{r.run_id} ({r.status})" for _, r in same.drop(kept.name).iterrows())
        latest = "the latest FINISHED run" if kept.status == "FINISHED" else "the latest run"
        notes.append(f"{kept['name']} (config_hash {h}): kept run {kept.run_id} ({kept.status}, "
                     f"{latest}); the same measurement, not counted: {others}")
    return runs.loc[runs.index.isin(keep)], notes


def completeness(runs: pd.DataFrame, expected_jobs: Sequence[dict] | None,
                 per_run: pd.DataFrame) -> dict[str, list[str]]:
    """What is missing: jobs (dicts of overrides and config_hash) without a FINISHED run,
    failed runs, and incomplete groups."""
    finished = runs[runs.status == "FINISHED"]
    have = set(finished.get("config_hash", pd.Series(dtype=str)))
    missing = [" ".join(job["overrides"]) for job in expected_jobs or []
               if job["config_hash"] not in have]
    failed = [f"{r['name']} ({r.status}): {r.get('error') or 'no error recorded'}"
              for _, r in runs[runs.status != "FINISHED"].iterrows()]
    incomplete = []
    if not per_run.empty:
        labels = set(per_run.label)
        seeds = per_run.groupby(["group", "label"]).size().max()
        for group, g in per_run.groupby("group"):
            reasons = []
            if 0 not in set(g.level):
                reasons.append("no unpruned control (amount 0)")
            if set(g.label) != labels:
                reasons.append(f"cells {sorted(set(g.label))} of {sorted(labels)}")
            if g.groupby("label").size().min() < seeds:
                reasons.append(f"fewer than {seeds} seeds in some cells")
            if reasons:
                incomplete.append(f"{group}: " + "; ".join(reasons))
    return {"missing_jobs": missing, "failed_runs": failed, "incomplete_groups": incomplete}
