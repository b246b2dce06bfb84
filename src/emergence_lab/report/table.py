"""Pruning versus convergence: tables and the paper's claims, from runs and metric histories.

Pure functions on pandas: `runs` has one row per run (run_id, name, status, error and the
flattened config params), `hist` one row per logged value (run_id, key, step, value). Nothing
here reads a store or writes a file.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from emergence_lab.measure import keys as mk
from emergence_lab.report.groups import PAPER, label_runs, paper_protocol


def curve(hist: pd.DataFrame, run_id: str, key: str) -> pd.Series:
    """One metric of one run, indexed by step (a history is split by run and key once: the
    report reads tens of curves per run, and a filter of the whole history for each made the
    report's time grow with the square of its runs)."""
    got = _curves(hist).get((run_id, key))
    if got is None:
        return hist.iloc[:0].set_index("step")["value"]
    return got.copy()


_CURVES: dict[int, tuple[weakref.ref, int, dict[tuple[str, str], pd.Series]]] = {}


def _curves(hist: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    """The history's curves by (run_id, key), made once per history (histories are not changed
    in place once read; one of another length is split again)."""
    at = id(hist)
    held = _CURVES.get(at)
    if held is None or held[0]() is not hist or held[1] != len(hist):
        rows = hist.sort_values(["run_id", "key", "step"], kind="stable")
        steps, values = rows.step.to_numpy(), rows.value.to_numpy()
        curves = {k: pd.Series(values[i], index=pd.Index(steps[i], name="step"), name="value")
                  for k, i in rows.groupby(["run_id", "key"], sort=False).indices.items()}
        held = (weakref.ref(hist, lambda _: _CURVES.pop(at, None)), len(hist), curves)
        _CURVES[at] = held
    return held[2]


def epochs_to_reach(acc: pd.Series, target: float, after: int) -> float:
    """Epochs after `after` until acc first reaches target; NaN if it never does."""
    later = acc[(acc.index > after) & (acc >= target - 1e-12)]
    return float(later.index[0] - after) if len(later) else math.nan


TAIL = 3  # epochs: "the end" of a curve is the mean of its last TAIL epochs (see tail_len)


def tail_len(after: int) -> int:
    """How many last epochs make "the end" of a curve with `after` epochs after pruning: TAIL,
    but never more than a quarter of them (at least the last one), so that a short run's end
    is not its climb."""
    return max(1, min(TAIL, after // 4))


GAIN = 0.9  # epochs to this share of the run's own gain after pruning (speeds_convergence)


def own_gain_epochs(acc: pd.Series, after: int, share: float = GAIN) -> float:
    """Epochs after `after` until the curve first reaches `share` of its own gain, from its
    value at `after` to its plateau (the mean of its last epochs, tail_len), interpolated
    linearly between epochs; NaN when it gains nothing (it ends at or below where it started)."""
    post = acc[acc.index >= after].dropna()
    tail = tail_len(len(post) - 1)
    if len(post) < 2:
        return math.nan
    start, plateau = float(post.iloc[0]), float(post.iloc[-tail:].mean())
    if plateau - start <= 1e-9:
        return math.nan
    target = start + share * (plateau - start)
    i = int(np.argmax(post.to_numpy() >= target - 1e-12))  # one of the last epochs is >= plateau
    if i == 0:
        return 0.0
    (x0, x1), (y0, y1) = post.index[i - 1:i + 1], post.to_numpy()[i - 1:i + 1]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0) - after)


COMMON_TARGET = 0.99  # of the paired control's final accuracy: the target both must reach


def selection_key(hist: pd.DataFrame, run_ids: Sequence[str]) -> str:
    """The accuracy that convergence, the plateau and the stoppers read: validation accuracy
    where every run has a validation split (dataset.val_fraction), else test accuracy (the
    paper's protocol has no validation split; the report says which it read)."""
    have = set(hist.run_id[hist.key == mk.VAL_ACC])
    return mk.VAL_ACC if len(run_ids) and set(run_ids) <= have else mk.TEST_ACC


def common_target_epochs(acc: pd.Series, target: float, after: int, last: int
                         ) -> tuple[float, bool]:
    """(epochs after `after` until acc reaches the target shared with the paired control,
    censored): a run that never reaches it counts as one epoch past its horizon, so it is never
    faster than a run that does. NaN without a target (no control)."""
    if math.isnan(target):
        return math.nan, False
    t = epochs_to_reach(acc, target, after)
    return (float(last - after + 1), True) if math.isnan(t) else (t, False)


def run_stats(run: pd.Series, hist: pd.DataFrame) -> dict[str, float]:
    """Per-run numbers of the comparison (see the report's column notes)."""
    rid, pe = run.run_id, int(run.prune_epoch)
    acc, e, rel = (curve(hist, rid, k) for k in (mk.TEST_ACC, mk.E, mk.RELATIVE))
    e_after = curve(hist, rid, mk.E_AFTER).get(pe, e.get(pe, math.nan))
    rel_after = curve(hist, rid, mk.RELATIVE_AFTER).get(pe, rel.get(pe, math.nan))
    acc_after = curve(hist, rid, mk.TEST_ACC_AFTER).get(pe, acc.get(pe, math.nan))
    post = acc[acc.index > pe]
    area_x = [pe, *post.index] if len(post) else []
    area_y = [acc_after, *post.values] if len(post) else []
    times = curve(hist, rid, mk.EPOCH_TIME)
    final = float(acc.iloc[-1]) if len(acc) else math.nan
    e_before = float(e.get(pe, math.nan))
    train = curve(hist, rid, mk.TRAIN_ACC)
    return {
        "final_acc": final, "best_acc": float(acc.max()) if len(acc) else math.nan,
        "train_acc_epoch_5": float(train.get(5, math.nan)),
        "train_final_acc": float(train.iloc[-1]) if len(train) else math.nan,
        "acc_epoch_1": float(acc.get(1, math.nan)), "acc_epoch_5": float(acc.get(5, math.nan)),
        "acc_at_prune": float(acc.get(pe, math.nan)), "acc_after_prune": float(acc_after),
        "epochs_to_99pct_final": epochs_to_reach(acc, 0.99 * final, pe),
        "auc_after_prune": float(np.trapezoid(area_y, area_x)) if len(area_y) > 1 else math.nan,
        "E_init": float(e.get(0, math.nan)), "E_epoch_1": float(e.get(1, math.nan)),
        "E_max": _last(curve(hist, rid, mk.E_MAX)),
        "E_before": e_before, "E_after": float(e_after),
        "E_final": float(e.iloc[-1]) if len(e) else math.nan,
        "E_change_pct": 100 * (e_after - e_before) / e_before if e_before else math.nan,
        "relE_before": float(rel.get(pe, math.nan)), "relE_after": float(rel_after),
        "relE_final": float(rel.iloc[-1]) if len(rel) else math.nan,
        "mean_E_after_prune": float(e[e.index > pe].mean()),
        "mean_relE_after_prune": float(rel[rel.index > pe].mean()),
        "params_surviving": _last(curve(hist, rid, mk.PARAMS)),
        "sparsity": _last(curve(hist, rid, mk.SPARSITY)),
        "s_per_epoch": float(times.mean()) if len(times) else math.nan,
        "last_epoch": int(acc.index.max()) if len(acc) else -1,
    }


def _last(series: pd.Series) -> float:
    return float(series.iloc[-1]) if len(series) else math.nan


def design_axes(run: pd.Series) -> dict[str, float]:
    """The design axes some claims compare along (claims/designs.py): the emergence-promoting
    initialization's α (1 for the standard initialization) and whether the network was
    pretrained; a tidy table's runs carry them as columns (init_alpha, pretrained)."""
    if "init_alpha" in run or "pretrained" in run:
        return {"init_alpha": float(run.get("init_alpha", 1.0)),
                "pretrained": float(run.get("pretrained", 0.0))}
    # an initialization with an α (models.INITS: the emergence-promoting one) logs init.alpha;
    # the standard one has none: α = 1
    alpha = pd.to_numeric(run.get("init.alpha", 1.0), errors="coerce")
    alpha = 1.0 if pd.isna(alpha) else alpha
    epochs = pd.to_numeric(run.get("pretrain.epochs", 0), errors="coerce")
    return {"init_alpha": float(alpha), "pretrained": float(bool(epochs and epochs > 0))}


def per_run_table(runs: pd.DataFrame, hist: pd.DataFrame, labelled: bool = False) -> pd.DataFrame:
    """One row per FINISHED run: its labels and run_stats, plus paired comparisons. `labelled`:
    the runs already carry group, base_group, level, strategy, seed, prune_epoch, final_from
    and lr_after (a tidy table's runs), else they come from the config params."""
    if labelled:
        done = runs
    else:
        done = label_runs(runs)
        # the groups the lr after pruning does not split: where a re-tuned lr is compared
        base = label_runs(runs.drop(columns=[c for c in ("trainer.lr_after_prune",) if c in runs]))
        done["base_group"] = base.group
    done = done[done.status == "FINISHED"]
    rows = [{"run_id": r.run_id, "name": r["name"], "group": r.group, "base_group": r.base_group,
             "lr_after": r.lr_after, "batch_size": r.get("trainer.batch_size"),
             "momentum": r.get("trainer.momentum"), "normalize": r.get("dataset.normalize", "False"),
             "experiment_id": r.get("experiment_id"), "level": r.level,
             "strategy": r.strategy, "seed": r.seed, "prune_epoch": r.prune_epoch, "final_from": r.final_from,
             "dataset": r.get("dataset.name"), "model": r.get("model.name"),
             "paper_protocol": paper_protocol(r), **design_axes(r), **run_stats(r, hist)}
            for _, r in done.iterrows()]
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    several = table[table.level > 0].strategy.nunique() > 1
    table["label"] = [(f"{st} {lv:.0%}" if lv > 0 else "control") if several else f"{lv:.0%}"
                      for st, lv in zip(table.strategy, table.level, strict=True)]
    # control first, then by strategy and amount
    table["order"] = [(lv > 0, st, lv) for st, lv in zip(table.strategy, table.level, strict=True)]
    # each run's control: the amount-0 run of its group with the same seed
    control = table[table.level == 0].groupby(["group", "seed"]).first().reindex(
        pd.MultiIndex.from_frame(table[["group", "seed"]]))
    for col in ("final_acc", "epochs_to_99pct_final", "mean_E_after_prune",
                "mean_relE_after_prune"):
        table[f"d_{col}"] = table[col].to_numpy() - control[col].to_numpy()
    # an unpruned network's size (the dense network a pruned one of that size is compared with)
    table["dense_size"] = table.params_surviving.where(table.level == 0)
    sel = selection_key(hist, table.run_id)
    table["selection_key"] = sel
    table["final_selection_acc"] = [_last(curve(hist, rid, sel)) for rid in table.run_id]
    control = table[table.level == 0].groupby(["group", "seed"]).first().reindex(
        pd.MultiIndex.from_frame(table[["group", "seed"]]))
    ref_final = control["final_acc"].to_numpy()
    ref_sel = control["final_selection_acc"].to_numpy()
    table["epochs_to_control_final"] = [
        epochs_to_reach(curve(hist, rid, mk.TEST_ACC), ref, pe) if not math.isnan(ref) else math.nan
        for rid, ref, pe in zip(table.run_id, ref_final, table.prune_epoch, strict=True)]
    common = [common_target_epochs(curve(hist, rid, sel), COMMON_TARGET * ref, pe, last)
              for rid, ref, pe, last in zip(table.run_id, ref_sel, table.prune_epoch,
                                            table.last_epoch, strict=True)]
    table["epochs_to_common_target"] = [t for t, _ in common]
    table["censored_common_target"] = [c for _, c in common]
    table["epochs_to_own_plateau"] = [own_gain_epochs(curve(hist, rid, mk.TRAIN_ACC), pe)
                                      for rid, pe in zip(table.run_id, table.final_from,
                                                         strict=True)]
    return table.sort_values(["group", "order", "seed"]).reset_index(drop=True)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of its t-interval (NaN below 2 values) and n, ignoring NaN."""
    v = np.asarray([x for x in values if not (isinstance(x, float) and math.isnan(x))], float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    if len(v) < 2:
        return float(v[0]), math.nan, 1
    if np.ptp(v) == 0:
        return float(v[0]), 0.0, len(v)
    lo, hi = stats.t.interval(confidence, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    return float(v.mean()), float((hi - lo) / 2), len(v)


SUMMARY_COLUMNS = [
    "acc_epoch_1", "acc_epoch_5", "final_acc", "best_acc", "d_final_acc", "train_acc_epoch_5",
    "train_final_acc",
    "epochs_to_99pct_final", "epochs_to_control_final", "epochs_to_common_target",
    "epochs_to_own_plateau",
    "auc_after_prune", "E_init", "E_before", "E_after", "E_final", "E_change_pct", "relE_before",
    "relE_after", "relE_final", "params_surviving", "sparsity", "s_per_epoch",
]


def summary_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per group and pruning level: mean, 95 % half-width and n of each column; control first."""
    rows = []
    for (group, _), cell in per_run.groupby(["group", "order"], sort=True):
        level, strategy = cell.level.iloc[0], cell.strategy.iloc[0]
        row = {"group": group, "label": cell.label.iloc[0], "strategy": strategy, "level": level,
               "n": len(cell)}
        for col in SUMMARY_COLUMNS:
            mean, half, n = mean_ci(cell[col].tolist())
            row[col], row[f"{col}_ci"] = mean, half
        row["never_reached_control"] = int(cell["epochs_to_control_final"].isna().sum())
        row["censored_common"] = int(cell["censored_common_target"].astype(bool).sum())
        paper = PAPER.get(str(cell["dataset"].iloc[0]), {}) if cell.paper_protocol.all() else {}
        row["paper_final_acc"] = paper.get("final", {}).get(round(level, 2), math.nan) / 100
        row["paper_acc_epoch_5"] = paper.get("after5", math.nan) / 100
        rows.append(row)
    return pd.DataFrame(rows)
