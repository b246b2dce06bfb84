"""The report's landscape section (runs with landscape=curvature or full): the measures per arm
over the measured epochs, as a table and as lines, and the loss on one filter-normalized plane
of the control beside a pruned arm (contours; the planes are the runs' artifacts)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.report.figures import _lines, curves
from emergence_lab.report.table import mean_ci
from emergence_lab.store import artifacts

FOLDER = "landscape"  # the runs' artifact folder (run/landscape.py)
LABELS = {mk.LAMBDA_MAX: "top Hessian eigenvalue", mk.TRACE: "Hessian trace",
          mk.TRACE_PER_PARAM: "trace per surviving parameter",
          mk.SLICE_MINIMA: "local minima per slice", mk.ROUGHNESS: "roughness of slices"}


def measured(hist: pd.DataFrame) -> list[str]:
    return [k for k in LABELS if hist.key.eq(k).any()]


def landscape_table(per_run: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    """One row per arm and measured epoch: each measure's mean ± 95 % half-width over seeds."""
    present = measured(hist)
    h = hist[hist.key.isin(present) & hist.run_id.isin(per_run.run_id)]
    if h.empty:
        return pd.DataFrame()
    h = h.join(per_run.set_index("run_id")[["label", "order"]], on="run_id")
    rows = []
    for (_, label, step), cell in h.groupby(["order", "label", "step"], sort=True):
        row = {"pruned": label, "epoch": int(step)}
        for key in present:
            mean, half, n = mean_ci(cell[cell.key == key].value.tolist())
            row[LABELS[key]] = "–" if n == 0 else f"{mean:.4g}" + (
                "" if math.isnan(half) else f" ± {half:.2g}")
        rows.append(row)
    return pd.DataFrame(rows)


def landscape_figure(per_run: pd.DataFrame, hist: pd.DataFrame, title: str) -> plt.Figure | None:
    present = measured(hist)
    if not present:
        return None
    data = curves(per_run, hist, present)
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 4), squeeze=False)
    for ax, key in zip(axes[0], present, strict=True):
        _lines(ax, data, key, LABELS[key], int(per_run.prune_epoch.max()))
    fig.suptitle(f"The loss landscape at the measured epochs\n{title}", fontsize=10)
    fig.tight_layout()
    return fig


def load_planes(uri: str, per_run: pd.DataFrame) -> dict[str, dict[str, dict]]:
    """Per group: the last measured plane of the lowest seed's control and of each strategy's
    most pruned arm, where the runs stored planes (landscape=full)."""
    out: dict[str, dict[str, dict]] = {}
    for group, g in per_run.groupby("group"):
        seed = g[g.seed == g.seed.min()].sort_values("order")
        pruned = seed[seed.level > 0]
        picks = [r for _, r in seed[seed.level == 0].head(1).iterrows()] + [
            s.sort_values("level").iloc[-1] for _, s in pruned.groupby("strategy", sort=True)]
        for r in picks:
            names = sorted(n for n in artifacts.artifact_names(uri, r.run_id, FOLDER)
                           if n.startswith("plane_"))
            if names:
                plane = artifacts.load_json(uri, r.run_id, f"{FOLDER}/{names[-1]}")
                epoch = int(names[-1].split("_")[-1].split(".")[0])
                out.setdefault(group, {})[f"{r.label} (seed {r.seed}, epoch {epoch})"] = plane
    return out


def plane_figure(planes: dict[str, dict], title: str) -> plt.Figure:
    """The loss over each plane (filter-normalized directions, the weights at the centre),
    contours on one colour scale, side by side."""
    grids = {k: np.asarray(p["loss"]) for k, p in planes.items()}
    lo = min(float(np.nanmin(g)) for g in grids.values())
    hi = max(float(np.nanpercentile(g, 95)) for g in grids.values())
    levels = np.linspace(lo, max(hi, lo + 1e-9), 15)
    fig, axes = plt.subplots(1, len(grids), figsize=(5 * len(grids), 4.5), squeeze=False)
    for ax, (label, grid) in zip(axes[0], grids.items(), strict=True):
        ticks = np.asarray(planes[label]["ticks"])
        cs = ax.contourf(ticks, ticks, np.clip(grid, lo, levels[-1]), levels=levels,
                         cmap="viridis")
        ax.plot(0, 0, "r+", markersize=10)
        ax.set(title=label, xlabel="direction 1", ylabel="direction 2")
        fig.colorbar(cs, ax=ax, label="training loss (probe batch)")
    fig.suptitle(f"The loss on a filter-normalized plane (Li et al. 2018)\n{title}", fontsize=10)
    fig.tight_layout()
    return fig


