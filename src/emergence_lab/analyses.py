"""The report's further tables: emergence by threshold, and what the emergence-based stopper
would have done. Pure functions on the report's per-run table and metric history."""

from __future__ import annotations

import math

import pandas as pd

from emergence_lab.emergence import stop_epoch
from emergence_lab.report import curve, mean_ci

THETA_PREFIX = "emergence/E_theta/"


def theta_table(per_run: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    """Final E at every threshold of the grid, mean over seeds, per group and pruning level."""
    keys = sorted({k for k in hist.key.unique() if k.startswith(THETA_PREFIX)},
                  key=lambda k: float(k[len(THETA_PREFIX):]))
    rows = []
    for (group, _), cell in per_run.groupby(["group", "order"]):
        row = {"group": group, "pruned": cell.label.iloc[0], "n": len(cell)}
        for key in keys:
            curves = [curve(hist, rid, key) for rid in cell.run_id]
            finals = [c.iloc[-1] for c in curves if len(c)]
            row[f"E(θ={key[len(THETA_PREFIX):]})"] = mean_ci(finals)[0]
        rows.append(row)
    return pd.DataFrame(rows)


def stopper_table(per_run: pd.DataFrame, hist: pd.DataFrame, epsilon: float,
                  patience: int) -> pd.DataFrame:
    """For each run trained to its last epoch: the epoch at which the stopper (E <= epsilon for
    `patience` epochs, counted after the last pruning step) would have fired, the epochs that
    would have saved and the test accuracy given up."""
    rows = []
    for _, r in per_run.iterrows():
        e, acc = curve(hist, r.run_id, "emergence/E"), curve(hist, r.run_id, "test/acc")
        after = e[e.index > r.final_from]
        fired = stop_epoch(list(after.items()), epsilon, patience)
        last = int(acc.index.max())
        rows.append({"run": r["name"], "pruned": r.label, "seed": r.seed,
                     "last_epoch": last, "fires_at": fired if fired is not None else "never",
                     "epochs_saved": last - fired if fired is not None else 0,
                     "acc_given_up": float(acc.iloc[-1] - acc[fired]) if fired is not None
                     else math.nan})
    return pd.DataFrame(rows)
