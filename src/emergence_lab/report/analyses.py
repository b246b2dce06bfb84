"""The report's further tables: emergence by threshold, what the emergence-based stopper and
the standard stopping criteria would have done, and how close the paper's open choices bring
us to its numbers. Pure functions on the report's per-run table and metric history."""

from __future__ import annotations

import math

import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.measure.formula import stop_epoch
from emergence_lab.measure.keys import PAPER as PAPER_SETTING
from emergence_lab.measure.keys import THETA_KEYS
from emergence_lab.report.groups import PAPER
from emergence_lab.report.table import curve, mean_ci

THETA_PREFIX = THETA_KEYS[PAPER_SETTING.rule]  # final E by θ, in the paper's rule


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


def _patience_epoch(loss: pd.Series, patience: int) -> int | None:
    """The epoch at which `patience` epochs in a row have not improved on the best loss so far
    (Keras' and Lightning's EarlyStopping on a validation loss), or None."""
    best, waited = math.inf, 0
    for epoch, value in loss.items():
        if value < best:
            best, waited = value, 0
        else:
            waited += 1
            if waited >= patience:
                return int(epoch)
    return None


def _plateau_epoch(loss: pd.Series, patience: int, rel: float = 0.01) -> int | None:
    """The epoch at which the training loss has improved by less than `rel` (relative) for
    `patience` epochs in a row (a plateau criterion, as in ReduceLROnPlateau), or None."""
    waited = 0
    values = list(loss.items())
    for (_, before), (epoch, value) in zip(values, values[1:], strict=False):
        waited = waited + 1 if before - value < rel * abs(before) else 0
        if waited >= patience:
            return int(epoch)
    return None


def _after(c: pd.Series, epoch: int) -> pd.Series:
    return c[c.index > epoch]


def stopping_comparison(per_run: pd.DataFrame, hist: pd.DataFrame, epsilon: float,
                        patience: int) -> pd.DataFrame:
    """For each run trained to its last epoch, counted after its last pruning step: the epoch
    at which each stopper would have fired, the epochs saved and the test accuracy given up
    (points). Stoppers: E <= epsilon for `patience` epochs (the paper's), no improvement of the
    validation loss for `patience` epochs (the test loss where runs have no validation split,
    as the paper's protocol), and the training loss improving by < 1 % for `patience`
    epochs."""
    rows = []
    for _, r in per_run.iterrows():
        acc = curve(hist, r.run_id, mk.TEST_ACC)
        if acc.empty:
            continue
        last = int(acc.index.max())
        val = not curve(hist, r.run_id, mk.VAL_LOSS).empty  # a validation split: its loss
        e, held_loss, train_loss = (_after(curve(hist, r.run_id, k), r.final_from)
                                    for k in (mk.E, mk.VAL_LOSS if val else mk.TEST_LOSS,
                                              mk.TRAIN_LOSS))
        fired = {"E stopper": stop_epoch(list(e.items()), epsilon, patience),
                 f"{'val' if val else 'test'}-loss patience": _patience_epoch(held_loss, patience),
                 "train-loss plateau": _plateau_epoch(train_loss, patience)}
        for stopper, epoch in fired.items():
            rows.append({"run": r["name"], "pruned": r.label, "seed": r.seed, "stopper": stopper,
                         "fires_at": epoch if epoch is not None else "never",
                         "epochs_saved": last - epoch if epoch is not None else 0,
                         "acc_given_up_pts": 100 * float(acc.iloc[-1] - acc[epoch])
                         if epoch is not None and epoch in acc.index else math.nan})
    return pd.DataFrame(rows)


def stopping_summary(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per stopper and pruning level: runs it fired in, mean epochs saved and mean accuracy
    given up (points, mean ± 95 % half-width over the runs where it fired)."""
    rows = []
    if comparison.empty:
        return comparison
    for (stopper, pruned), g in comparison.groupby(["stopper", "pruned"], sort=False):
        fired = g[g.fires_at != "never"]
        saved, half_s, _ = mean_ci(fired.epochs_saved.astype(float).tolist())
        lost, half_l, _ = mean_ci(fired.acc_given_up_pts.astype(float).tolist())
        rows.append({"stopper": stopper, "pruned": pruned, "fired": f"{len(fired)}/{len(g)}",
                     "epochs saved": _pm(saved, half_s, 1),
                     "acc given up (pts)": _pm(lost, half_l, 2)})
    return pd.DataFrame(rows)


def stopping_by_run(comparison: pd.DataFrame) -> pd.DataFrame:
    """One row per run, one column per stopper: 'never' or 'epoch (−saved, given up pts)'."""
    if comparison.empty:
        return comparison
    cell = [str(f) if f == "never" else f"{f} (−{s}, {g:+.2f} pts)"
            for f, s, g in zip(comparison.fires_at, comparison.epochs_saved,
                               comparison.acc_given_up_pts, strict=True)]
    wide = comparison.assign(cell=cell).pivot_table(
        index=["run", "pruned", "seed"], columns="stopper", values="cell", aggfunc="first",
        sort=False)
    return wide.reset_index()


def _pm(mean: float, half: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" ± {half:.{digits}f}")


def calibration(per_run: pd.DataFrame, tolerance_pts: float = 2.0) -> pd.DataFrame:
    """The paper's open choices ranked by distance to its numbers: per setting (batch size,
    momentum, input normalization) of the runs that follow its protocol, the largest and the
    root-mean-square gap (points) between our mean accuracy and each of the paper's (epoch 5
    and final, each level, each data set), for our training and our test accuracy, and
    whether every gap is within `tolerance_pts`. Empty without paper-protocol runs."""
    runs = per_run[per_run.paper_protocol] if "paper_protocol" in per_run else per_run.iloc[0:0]
    if runs.empty:
        return pd.DataFrame()
    rows = []
    for setting, g in runs.groupby(["batch_size", "momentum", "normalize"], dropna=False):
        gaps: dict[str, list[float]] = {"train": [], "test": []}
        for dataset, d in g.groupby("dataset"):
            paper = PAPER[dataset]
            for split, at5, final in (("train", "train_acc_epoch_5", "train_final_acc"),
                                      ("test", "acc_epoch_5", "final_acc")):
                gaps[split].append(100 * d[at5].mean() - paper["after5"])
                for level, value in paper["final"].items():
                    cell = d[d.level.round(2) == level]
                    if len(cell):
                        gaps[split].append(100 * cell[final].mean() - value)
        row = {"batch size": setting[0], "momentum": setting[1], "normalize": setting[2],
               "data sets": ", ".join(sorted(g.dataset.unique())), "seeds": g.seed.nunique(),
               "numbers compared": len(gaps["test"])}
        for split, values in gaps.items():
            v = [x for x in values if not math.isnan(x)]
            row[f"max gap {split} (pts)"] = max(map(abs, v)) if v else math.nan
            row[f"rms gap {split} (pts)"] = math.sqrt(sum(x * x for x in v) / len(v)) if v else math.nan
            row[f"within {tolerance_pts:g} pts ({split})"] = bool(v) and max(map(abs, v)) <= tolerance_pts
        rows.append(row)
    table = pd.DataFrame(rows)
    table["best gap (pts)"] = table[["max gap train (pts)", "max gap test (pts)"]].min(axis=1)
    return table.sort_values("best gap (pts)").reset_index(drop=True).round(2)
