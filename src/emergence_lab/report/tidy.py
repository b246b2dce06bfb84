"""The tidy table, in and out: one row per run and epoch, what every claim is a function of.

Columns (more are allowed):

| column | meaning |
|---|---|
| run_id | any string |
| seed | integer; the replicate |
| strategy | the pruning strategy; `none` for the control |
| amount | the pruned fraction; 0 for the control |
| prune_epoch | pruning happens at the end of this epoch; the paired control carries the same |
| epoch | 1, 2, ... |
| train_acc, test_acc | fractions in [0, 1] |
| n_params | surviving parameters at that epoch |
| E, relative_E | emergence in the default setting, and E / n_params |

Optional: `group` (default: one group), `val_acc`, `train_loss`, the design axes `init_alpha`
(the emergence-promoting initialization's α, 1 for the standard one) and `pretrained` (1 or 0),
and any numeric column (E under another
setting, named as its metric key, e.g. `emergence/E/dormant/0.1/edges`; the landscape's
`landscape/lambda_max`, ... at the epochs it was measured, empty elsewhere). A report writes it as
`epochs.csv`; `scripts/report.py --from-table FILE.csv` builds the whole report from one, with
no MLflow store. Pure functions on pandas; reading and writing files is the caller's.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from emergence_lab.measure import keys as mk

REQUIRED = ("run_id", "seed", "strategy", "amount", "prune_epoch", "epoch", "train_acc",
            "test_acc", "n_params", "E", "relative_E")
METRICS = {"train_acc": mk.TRAIN_ACC, "test_acc": mk.TEST_ACC, "n_params": mk.PARAMS,
           "E": mk.E, "relative_E": mk.RELATIVE, "val_acc": mk.VAL_ACC,
           "train_loss": mk.TRAIN_LOSS}
AXES = {"init_alpha": 1.0, "pretrained": 0.0}  # per-run design axes and their defaults
LABELS = ("run_id", "seed", "strategy", "amount", "prune_epoch", "epoch", "group", *AXES)
CONTROL = "none"  # the table's strategy of a control; the report's is "control"


class TableError(ValueError):
    """A tidy table that cannot be read; the message names the problem in one line."""


def to_table(per_run: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    """The report's runs as a tidy table: one row per run and epoch >= 1, the required
    columns, the group, and every other E setting the runs logged."""
    extra = sorted(k for k in hist.key.unique() if k not in (mk.E, mk.RELATIVE) and k.startswith(
        (mk.E, mk.RELATIVE, "sparsity/", "landscape/")))  # other settings, the θ grid, the
    # baselines, the landscape (at the epochs it was measured)
    wanted = [mk.TRAIN_ACC, mk.TEST_ACC, mk.PARAMS, mk.E, mk.RELATIVE, mk.VAL_ACC, mk.TRAIN_LOSS,
              *extra]
    h = hist[hist.key.isin(wanted) & hist.run_id.isin(per_run.run_id) & (hist.step >= 1)]
    wide = h.pivot_table(index=["run_id", "step"], columns="key", values="value",
                         aggfunc="last").reset_index().rename(columns={"step": "epoch"})
    wide = wide.rename(columns={v: k for k, v in METRICS.items()})
    axes = [a for a in AXES if a in per_run and per_run[a].nunique() > 1]  # only where they vary
    labels = per_run[["run_id", "seed", "strategy", "level", "prune_epoch", "group", *axes]].rename(
        columns={"level": "amount"})
    labels = labels.assign(strategy=[CONTROL if lv == 0 else st for st, lv in
                                     zip(labels.strategy, labels.amount, strict=True)])
    out = labels.merge(wide, on="run_id")
    front = [c for c in (*REQUIRED, "group", *AXES, "val_acc") if c in out]
    return out[front + [c for c in out.columns if c not in front]].sort_values(
        ["group", "run_id", "epoch"]).reset_index(drop=True)


MEASURED = ("train_acc", "test_acc", "n_params", "E", "relative_E")  # a value at every epoch
RULES = (  # (what must hold, a mask of the rows that break it, from the table)
    ("seed must be an integer below 2**31 in size (a replicate's number)",
     lambda t: t.seed.abs() >= 2 ** 31),
    ("epoch must be >= 1 (epoch 0 is the initialization, not a row)", lambda t: t.epoch < 1),
    ("amount must be a fraction in [0, 1)", lambda t: ~t.amount.between(0, 1, inclusive="left")),
    ("prune_epoch must be >= 0", lambda t: t.prune_epoch < 0),
    ("n_params must be > 0", lambda t: t.n_params <= 0),
    ("E and relative_E must be >= 0", lambda t: (t.E < 0) | (t.relative_E < 0)),
)


def _check_whole(table: pd.DataFrame, source: str) -> None:
    """The table as a whole: measured values present and finite, every rule of RULES, one row
    per run and epoch, each run's prune_epoch within its epochs; a TableError names the row."""
    def fail(mask: pd.Series, what: str) -> None:
        if mask.any():
            row = int(mask.idxmax())
            raise TableError(f"{source}: row {row + 2}: {what} (run {table.run_id[row]!r}, "
                             f"epoch {table.epoch[row]})")
    numeric = table.select_dtypes("number")
    fail(numeric.isin([np.inf, -np.inf]).any(axis=1), "a value is infinite")
    for col in MEASURED:
        fail(table[col].isna(), f"{col} is empty (every run has it at every epoch)")
    for what, broken in RULES:
        fail(broken(table), what)
    fail(table.duplicated(["run_id", "epoch"]), "a second row for the same run and epoch")
    last = table.groupby("run_id").epoch.transform("max")
    fail(table.prune_epoch > last, "prune_epoch is after the run's last epoch")
    for col in ("seed", "strategy", "amount", "prune_epoch", "group", *AXES):
        if col in table:  # one value a run: not read from whichever row comes first
            values = table[col].astype(str)
            first = values.groupby(table.run_id).transform("first")
            fail(values != first, f"{col} differs from the run's first row ({col} is one value "
                                  f"a run)")


def _empty_values(table: pd.DataFrame) -> list[str]:
    """Optional measured columns (train_loss, val_acc) empty at some epochs of a run that has
    them at others: each named, for the report to say (left out of what reads them)."""
    out = []
    for col in (c for c in METRICS if c not in MEASURED and c in table):
        has = table[col].notna().groupby(table.run_id).transform("any")
        for run, rows in table[has & table[col].isna()].groupby("run_id"):
            out.append(f"{run}: {col} empty at epoch {', '.join(map(str, rows.epoch.astype(int)))}"
                       f" (left out of what reads it)")
    return out


def from_table(table: pd.DataFrame, source: str = "the table"
               ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[str]]]:
    """(runs labelled as the report's per_run_table takes them, hist, what the report says of
    the table: unpaired runs, empty values) from a tidy table; a TableError names a missing
    column or a bad value with its row."""
    missing = [c for c in REQUIRED if c not in table]
    if missing:
        raise TableError(f"{source}: missing column {missing[0]!r} (a tidy table has "
                         f"{', '.join(REQUIRED)})")
    table = table.copy()
    table["group"] = table["group"].astype(str) if "group" in table else "all runs"
    numeric = [c for c in table.columns if c not in ("run_id", "strategy", "group")]
    for col in numeric:
        values = pd.to_numeric(table[col], errors="coerce")
        if values.dtype == object:  # integers past int64 (a seed of 10**30): as floats
            values = values.astype(float)
        bad = values.isna() & table[col].notna()
        if bad.any():
            row = int(bad.idxmax())
            raise TableError(f"{source}: row {row + 2} (line of the file): {col}="
                             f"{table[col][row]!r} is not a number")
        table[col] = values
    for col in ("seed", "epoch", "prune_epoch"):
        if table[col].isna().any() or (table[col] % 1 != 0).any():
            row = int((table[col].isna() | (table[col] % 1 != 0)).idxmax())
            raise TableError(f"{source}: row {row + 2}: {col} must be an integer, got "
                             f"{table[col][row]!r}")
    for col in ("train_acc", "test_acc", "val_acc"):
        if col in table and not table[col].dropna().between(0, 1).all():
            row = int((~table[col].between(0, 1)).idxmax())
            raise TableError(f"{source}: row {row + 2}: {col}={table[col][row]} is not a "
                             f"fraction in [0, 1]")
    _check_whole(table, source)
    first = table.groupby("run_id").first()
    strategy = ["control" if (st == CONTROL or am == 0) else str(st)
                for st, am in zip(first.strategy, first.amount, strict=True)]
    runs = pd.DataFrame({
        "run_id": first.index, "name": first.index, "status": "FINISHED", "error": "",
        "start_time": range(len(first)),
        "config_hash": first.index, "stopped_early_at": "", "group": first.group.to_numpy(),
        "base_group": first.group.to_numpy(), "level": first.amount.astype(float).to_numpy(),
        "strategy": strategy, "seed": first.seed.astype(int).to_numpy(),
        "prune_epoch": first.prune_epoch.astype(int).to_numpy(),
        "final_from": first.prune_epoch.astype(int).to_numpy(), "lr_after": math.nan,
        **{a: first[a].fillna(d).astype(float).to_numpy() if a in first else d
           for a, d in AXES.items()}})
    controls = {(g, s) for g, s, lv in zip(runs.group, runs.seed, runs.level, strict=True)
                if lv == 0}
    unpaired = [f"{r.run_id} (group {r.group}, seed {r.seed}): no control (amount 0) of its "
                f"seed" for r in runs.itertuples() if (r.group, r.seed) not in controls]
    keys = {c: METRICS.get(c, c) for c in table.columns if c not in LABELS}
    hist = table.melt(id_vars=["run_id", "epoch"], value_vars=list(keys), var_name="key",
                      value_name="value").dropna(subset=["value"])
    hist = hist.assign(key=hist.key.map(keys)).rename(columns={"epoch": "step"})
    hist["step"] = hist.step.astype(int)
    return (runs, hist[["run_id", "key", "step", "value"]].reset_index(drop=True),
            {"unpaired": unpaired, "empty_values": _empty_values(table)})
