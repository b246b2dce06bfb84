"""The report's plots (seaborn): the paper's figures 2 to 5 per group, and relative E at pruning
against epochs to converge. Functions take tables and return matplotlib figures."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only; no display on the machines this runs on
matplotlib.rcParams["figure.max_open_warning"] = 0  # a report holds its figures until written

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from emergence_lab.measure import keys as mk  # noqa: E402
from emergence_lab.report.groups import PAPER  # noqa: E402
from emergence_lab.report.table import mean_ci  # noqa: E402

LEVEL = "pruned"


def curves(per_run: pd.DataFrame, hist: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Long table (run_id, level, seed, step, key, value) of the given metrics, plus the change
    of test accuracy from the previous epoch as key 'test/acc_change'."""
    h = hist[hist.run_id.isin(per_run.run_id) & hist.key.isin(keys + [mk.TEST_ACC])].copy()
    acc = h[h.key == mk.TEST_ACC].sort_values(["run_id", "step"]).copy()
    acc["value"] = acc.groupby("run_id")["value"].diff()
    acc["key"] = mk.ACC_CHANGE
    h = pd.concat([h[h.key.isin(keys)], acc.dropna(subset=["value"])])
    labels = per_run.set_index("run_id")[["label", "order", "seed"]]
    h = h.join(labels, on="run_id")
    return h.rename(columns={"label": LEVEL})


def _order(d: pd.DataFrame) -> list[str]:
    """Cells, control first, so colours and legends agree across panels."""
    return list(dict.fromkeys(d.sort_values("order")[LEVEL]))


def t_band(values: pd.Series) -> tuple[float, float]:
    """The 95 % t-interval of the mean over seeds, as in the tables (no band for one seed)."""
    mean, half, _ = mean_ci(values.tolist())
    half = 0.0 if math.isnan(half) else half
    return mean - half, mean + half


def _lines(ax, data: pd.DataFrame, key: str, ylabel: str, prune_epoch: int) -> None:
    d = data[data.key == key]
    sns.lineplot(data=d, x="step", y="value", hue=LEVEL, hue_order=_order(d), ax=ax, marker="o",
                 markersize=3, errorbar=t_band, palette="viridis")
    if prune_epoch > 0:
        ax.axvline(prune_epoch, color="grey", linestyle="--", linewidth=1, label="pruning")
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    ax.grid(alpha=0.3)


FIGURES = {  # file stem: (title, [(metric key, y label), ...])
    "emergence_and_acc_change": ("Emergence and change in test accuracy vs epoch",
                                 [(mk.E, "emergence E"),
                                  (mk.ACC_CHANGE, "change in test accuracy")]),
    "relative_emergence": ("Relative emergence vs epoch", [(mk.RELATIVE, "E / parameter")]),
    "emergence": ("Emergence vs epoch", [(mk.E, "emergence E")]),
    "accuracy": ("Accuracy vs epoch", [(mk.TEST_ACC, "test accuracy"),
                                       (mk.TRAIN_ACC, "training accuracy")]),
}


def group_figures(per_run: pd.DataFrame, hist: pd.DataFrame, title: str) -> dict[str, plt.Figure]:
    """The figures of one group, by file stem."""
    keys = [mk.E, mk.RELATIVE, mk.TEST_ACC, mk.TRAIN_ACC]
    data = curves(per_run, hist, keys)
    prune_epoch = int(per_run.prune_epoch.max())
    figs = {}
    for stem, (name, panels) in FIGURES.items():
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
        for ax, (key, ylabel) in zip(axes[0], panels, strict=True):
            _lines(ax, data, key, ylabel, prune_epoch)
            if key in (mk.TEST_ACC, mk.TRAIN_ACC):
                _paper_points(ax, per_run)
        fig.suptitle(f"{name}\n{title}", fontsize=10)
        fig.tight_layout()
        figs[stem] = fig
    figs["relE_vs_convergence"] = convergence_scatter(per_run, title)
    figs["E_vs_accuracy"] = emergence_vs_accuracy(per_run, hist, title)
    return figs


def _paper_points(ax, per_run: pd.DataFrame) -> None:
    """The paper's accuracies (section 4) where the group follows its protocol: after 5 epochs
    and at the last epoch, each level, as black crosses on both the train and test panels."""
    if per_run.empty or not per_run.paper_protocol.all():
        return
    paper = PAPER.get(str(per_run.dataset.iloc[0]))
    if not paper:
        return
    last = int(per_run.last_epoch.max())
    finals = [v / 100 for lv, v in paper["final"].items() if lv in set(per_run.level.round(2))]
    ax.scatter([5] + [last] * len(finals), [paper["after5"] / 100, *finals], marker="x",
               color="black", s=50, zorder=5, label="paper (section 4)")
    ax.legend(fontsize=8)


def emergence_vs_accuracy(per_run: pd.DataFrame, hist: pd.DataFrame, title: str) -> plt.Figure:
    """E and relative E against test accuracy, one point per run and epoch (the reviewers'
    "plot E directly against performance")."""
    keys = [mk.E, mk.RELATIVE, mk.TEST_ACC]
    h = hist[hist.run_id.isin(per_run.run_id) & hist.key.isin(keys)]
    wide = h.pivot_table(index=["run_id", "step"], columns="key", values="value").reset_index()
    wide = wide.join(per_run.set_index("run_id")[["label", "order", "level", "prune_epoch"]],
                     on="run_id").rename(columns={"label": LEVEL})
    # a seed's branches share their epochs up to pruning: those points once, as the control's
    wide = wide[(wide.level == 0) | (wide.step > wide.prune_epoch)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key, xlabel in ((axes[0], mk.E, "emergence E"),
                            (axes[1], mk.RELATIVE, "E / parameter")):
        if key in wide and mk.TEST_ACC in wide:
            sns.scatterplot(data=wide, x=key, y=mk.TEST_ACC, hue=LEVEL, hue_order=_order(wide),
                            size="step", sizes=(10, 60), alpha=0.7, ax=ax, palette="viridis")
        ax.set(xlabel=xlabel, ylabel="test accuracy")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Emergence against test accuracy (a point per run and epoch; larger: later)"
                 f"\n{title}", fontsize=10)
    fig.tight_layout()
    return fig


def sensitivity_figure(sens: pd.DataFrame) -> dict[str, plt.Figure]:
    """Per group: each E claim's effect with its 95 % interval against the threshold θ, one
    line per activity rule and counting (and strategy), 0 marked."""
    figs = {}
    if sens.empty:
        return figs
    d = sens.assign(mode=sens.rule + ", " + sens.counting)
    for group, g in d.groupby("group"):
        claims = list(dict.fromkeys(g.claim))
        fig, axes = plt.subplots(1, len(claims), figsize=(5 * len(claims), 3.6), squeeze=False)
        for ax, claim in zip(axes[0], claims, strict=True):
            c = g[g.claim == claim]
            for (mode, strategy), line in c.groupby(["mode", "strategy"]):
                line = line.sort_values("theta")
                label = mode if c.strategy.nunique() == 1 else f"{mode}, {strategy}"
                ax.errorbar(line.theta, line["mean"], yerr=[line["mean"] - line.ci_low,
                            line.ci_high - line["mean"]], marker="o", capsize=3, label=label)
            ax.axhline(0, color="grey", linewidth=1)
            ax.set(xlabel="threshold θ (τ for dormant)", ylabel=c.unit.iloc[0], title=claim)
            ax.legend(fontsize=8, title="rule, counting")
            ax.grid(alpha=0.3)
        fig.suptitle(f"The E claims by threshold (mean and 95 % interval over seeds)\n{group}",
                     fontsize=10)
        fig.tight_layout()
        figs[group] = fig
    return figs


def convergence_scatter(per_run: pd.DataFrame, title: str) -> plt.Figure:
    """Relative E just after pruning against epochs to reach 99 % of the final accuracy."""
    d = per_run.rename(columns={"label": LEVEL})
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.scatterplot(data=d, x="relE_after", y="epochs_to_99pct_final", hue=LEVEL,
                    hue_order=_order(d), s=60, ax=ax, palette="viridis")
    ax.set(xlabel="relative emergence just after pruning",
           ylabel="epochs after pruning to 99 % of final acc")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    ax.grid(alpha=0.3)
    fig.suptitle(f"Relative emergence at pruning vs epochs to converge\n{title}", fontsize=10)
    fig.tight_layout()
    return fig
