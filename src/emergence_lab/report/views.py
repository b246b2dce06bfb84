"""The tables a person reads: display columns with intervals, the verdict table, the paper's
numbers beside ours, sensitivity, sparsity and learning-rate tables, links to the runs."""

from __future__ import annotations

import math

import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.report import verdicts
from emergence_lab.report.groups import PAPER_CNN, PAPER_STRATEGIES
from emergence_lab.report.table import mean_ci
from emergence_lab.store import links


def _fmt(value: float, half: float, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    f = {"pct": lambda v: f"{100 * v:.1f}", "int": lambda v: f"{v:.0f}", "e": lambda v: f"{v:.4g}",
         "f": lambda v: f"{v:.2f}"}[kind]
    return f(value) + (f" ± {f(half)}" if isinstance(half, float) and not math.isnan(half) else "")


COLUMNS = [  # (summary column, header, format)
    ("acc_epoch_1", "acc@1 %", "pct"), ("acc_epoch_5", "acc@5 %", "pct"),
    ("final_acc", "final acc %", "pct"), ("best_acc", "best acc %", "pct"),
    ("d_final_acc", "Δ final vs control (pts)", "pct"), ("paper_final_acc", "paper final %", "pct"),
    ("epochs_to_99pct_final", "epochs to 99 % of final", "f"),
    ("epochs_to_control_final", "epochs to control's final", "f"),
    ("epochs_to_common_target", "epochs to 99 % of control's final (censored)", "f"),
    ("epochs_to_own_plateau", "epochs to 90 % of own gain (train)", "f"),
    ("auc_after_prune", "AUC acc after pruning", "f"), ("E_init", "E init", "e"),
    ("E_before", "E before", "e"),
    ("E_after", "E after", "e"), ("E_final", "E end", "e"), ("E_change_pct", "ΔE at pruning %", "f"),
    ("relE_before", "rel E before", "e"), ("relE_after", "rel E after", "e"),
    ("relE_final", "rel E end", "e"), ("params_surviving", "params", "int"),
    ("sparsity", "sparsity %", "pct"), ("s_per_epoch", "s/epoch", "f"),
]


OVERVIEW = ["acc_epoch_1", "acc_epoch_5", "final_acc", "E_init", "E_final", "relE_final",
            "params_surviving"]


def display_table(summary: pd.DataFrame, group: str | None = None,
                  columns: list[str] | None = None) -> pd.DataFrame:
    """Formatted rows of one group (or, with the group column, of all), control first,
    mean ± 95 % half-width and n."""
    rows = []
    cells = summary if group is None else summary[summary.group == group]
    for _, r in cells.iterrows():  # already control first
        row = ({"group": r.group} if group is None else {}) | {"pruned": r.label, "n": int(r.n)}
        for col, header, kind in COLUMNS:
            if columns is not None and col not in columns:
                continue
            row[header] = _fmt(r[col], r.get(f"{col}_ci", math.nan), kind)
        if r.never_reached_control and "epochs to control's final" in row:
            row["epochs to control's final"] += f" (never: {int(r.never_reached_control)})"
        header = "epochs to 99 % of control's final (censored)"
        if header in row:
            row[header] += f" ({int(r.get('censored_common', 0))} of {int(r.n)} censored)"
        rows.append(row)
    return pd.DataFrame(rows)


TOP_COLUMNS = [  # (header, summary columns, format): at most 8 columns per group
    ("final acc %", ["final_acc"], "pct"), ("Δ vs control (pts)", ["d_final_acc"], "pct"),
    ("epochs to 90 % of own gain (train)", ["epochs_to_own_plateau"], "f"),
    ("E before → after → end", ["E_before", "E_after", "E_final"], "e"),
    ("relative E end", ["relE_final"], "e")]


def paper_numbers(summary: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(group, scope) -> the paper's own change in final accuracy (points, its table), where the
    group follows its protocol: what a claim with beside="paper accuracy" stands beside."""
    out: dict[tuple[str, str], str] = {}
    if summary.empty or "paper_final_acc" not in summary:
        return out
    for group, g in summary.groupby("group"):
        base = g[g.level == 0].paper_final_acc
        if base.empty or base.isna().all():
            continue
        diffs = {r.label: 100 * (r.paper_final_acc - base.iloc[0])
                 for r in g[g.level > 0].itertuples() if not math.isnan(r.paper_final_acc)}
        for label, d in diffs.items():
            out[(group, label)] = f"{d:+.1f} points"
        if diffs:
            out[(group, "all levels")] = f"{sum(diffs.values()) / len(diffs):+.1f} points"
    return out


def verdict_table(tests: pd.DataFrame, several_groups: bool, explain: bool = False,
                  rel: pd.DataFrame | None = None,
                  paper: dict[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """claim, (group,) scope, verdict, effect [95 % CI], n seeds, Holm p; `explain`: with each
    claim's meaning and caveat (the caveat of relative E says when its rise is the parameter
    count's, from `rel`), so the table reads on its own."""
    rows = []
    for _, r in tests.iterrows():
        scope = f"{r.strategy}: {r.scope}" if r.strategy else r.scope  # "" for all runs
        row = ({"group": r.group} if several_groups else {}) | {"claim": r.claim}
        claim = verdicts.CLAIMS[r.claim] if r.claim in verdicts.CLAIMS else None
        if explain and claim is not None:
            row["meaning"] = claim.meaning
            row["reads"] = claim.reads
        row |= {"pruned": scope, "verdict": verdicts.verdict_text(r),
                "effect [95 % CI]": verdicts.effect_text(r), "n seeds": int(r.n),
                "Holm p": "–" if math.isnan(r.p_holm) else f"{r.p_holm:.3g}"}
        if explain and claim is not None:
            if paper:
                ours = claim.beside == "paper accuracy" and r.strategy in PAPER_STRATEGIES
                row["paper"] = paper.get((r.group, r.scope), "–") if ours else "–"
            row["caveat"] = claim.caveat + _rel_note(rel, r)
        rows.append(row)
    return pd.DataFrame(rows)


def _rel_note(rel: pd.DataFrame | None, r: pd.Series) -> str:
    claim = verdicts.CLAIMS[r.claim] if r.claim in verdicts.CLAIMS else None
    if rel is None or rel.empty or claim is None or claim.beside != "relative E explained":
        return ""
    here = rel[(rel.group == r.group) & (rel.strategy == r.strategy) & (rel.counting == mk.PAPER.counting)
               & rel.note.astype(bool)]
    return f". Here: {here.note.iloc[0]} ({', '.join(here.pruned)})" if len(here) else ""


def rel_table(rel: pd.DataFrame | None, group: str) -> pd.DataFrame:
    """Relative E explained: the % change of E, parameters and relative E per level and
    counting (log-ratios add up), with 95 % intervals."""
    if rel is None or rel.empty:
        return pd.DataFrame()
    g = rel[rel.group == group]
    rows = []
    for _, r in g.iterrows():
        row = {"counting": r.counting, "pruned": r.pruned if r.strategy in r.pruned else
               f"{r.strategy} {r.pruned}"}
        for k in ("E", "parameters", "relative E"):
            lo, hi = r[f"{k} CI"]
            ci = "" if math.isnan(lo) else f" [{lo:+.1f}, {hi:+.1f}]"
            row[f"{k} (% change)"] = "–" if math.isnan(r[f"{k} %"]) else f"{r[f'{k} %']:+.1f}{ci}"
        row["note"] = r.note
        rows.append(row)
    return pd.DataFrame(rows)


def top_table(summary: pd.DataFrame, group: str) -> pd.DataFrame:
    """The short table of a group: level, n and five numbers."""
    rows = []
    for _, r in summary[summary.group == group].iterrows():
        row = {"pruned": r.label, "n": int(r.n)}
        for header, cols, kind in TOP_COLUMNS:
            parts = [_fmt(r[c], r.get(f"{c}_ci", math.nan) if len(cols) == 1 else math.nan, kind)
                     for c in cols]
            row[header] = " → ".join(parts)
        rows.append(row)
    return pd.DataFrame(rows)


def paper_table(summary: pd.DataFrame, group: str) -> pd.DataFrame:
    """The paper's accuracies beside ours, train and test (its figures plot training accuracy)."""
    cells = summary[(summary.group == group) & summary.paper_final_acc.notna()]
    rows = [{"pruned": r.label, "paper @5 %": _fmt(r.paper_acc_epoch_5, math.nan, "pct"),
             "train @5 %": _fmt(r.train_acc_epoch_5, r.train_acc_epoch_5_ci, "pct"),
             "test @5 %": _fmt(r.acc_epoch_5, r.acc_epoch_5_ci, "pct"),
             "paper final %": _fmt(r.paper_final_acc, math.nan, "pct"),
             "train final %": _fmt(r.train_final_acc, r.train_final_acc_ci, "pct"),
             "test final %": _fmt(r.final_acc, r.final_acc_ci, "pct")}
            for _, r in cells.iterrows()]
    return pd.DataFrame(rows)


def paper_cnn_table(per_run: pd.DataFrame, group: str) -> pd.DataFrame:
    """The paper's CNN E at epoch 1 (634,398) beside ours and beside the largest E our counted
    layers allow, for a group of the CNN (its architecture is our assumption)."""
    g = per_run[(per_run.group == group) & (per_run.model == PAPER_CNN["model.name"])]
    if g.empty:
        return pd.DataFrame()
    ours, half, n = mean_ci(g.E_epoch_1.tolist())
    most = float(g.E_max.max()) if g.E_max.notna().any() else math.nan
    paper = PAPER_CNN["E_epoch_1"]
    note = ("the paper's number is more than these layers allow: its CNN (not given in its text) "
            "must differ from ours (conv 32, conv 64, dense 128)" if paper > most else
            "within what these layers allow; the architecture is our assumption")
    return pd.DataFrame([{"data set": g.dataset.iloc[0], "n": n,
                          "E at epoch 1 (ours)": _fmt(ours, half, "int"),
                          "E at epoch 1 (paper)": f"{paper:,}",
                          "largest E these counted layers allow": "–" if math.isnan(most)
                          else f"{most:,.0f}",
                          "note": note if not math.isnan(most) else
                          "the runs did not log emergence/E_max; the architecture is our "
                          "assumption"}])


def sensitivity_table(sens: pd.DataFrame, group: str) -> pd.DataFrame:
    """Verdict by analysis setting: one row per (rule, θ, counting), one column per E claim."""
    g = sens[sens.group == group] if not sens.empty else sens
    if g.empty:
        return pd.DataFrame()
    g = g.assign(cell=[f"{v} ({verdicts.effect_text(r, 1)})" for v, (_, r) in
                       zip(g.verdict, g.iterrows(), strict=True)],
                 claim=[f"{c} ({s})" if s else c for c, s in
                        zip(g.claim, g.strategy, strict=True)])
    return g.pivot_table(index="setting", columns="claim", values="cell", aggfunc="first",
                         sort=False).reset_index()


def sparsity_table(sp: pd.DataFrame, group: str) -> pd.DataFrame:
    g = sp[sp.group == group].assign(unit="")
    return pd.DataFrame([{"signal": r.signal, "verdict (rho > 0)": r.verdict,
                          "mean rho over seeds [95 % CI]": verdicts.effect_text(r, 3),
                          "n seeds": int(r.n),
                          "Holm p": "–" if math.isnan(r.p_holm) else f"{r.p_holm:.3g}"}
                         for _, r in g.iterrows()])


def lr_table(lr: pd.DataFrame, group: str) -> pd.DataFrame:
    return pd.DataFrame([{"pruned": r.pruned, "best lr": f"{r.best_lr:g}",
                          "final % at best": f"{r.final_at_best:.1f}",
                          "control's best lr": f"{r.control_best_lr:g}",
                          "Δ vs control at its best": verdicts.effect_text(r),
                          "verdict (costs accuracy)": r.verdict, "n seeds": int(r.n)}
                         for _, r in lr[lr.group == group].iterrows()])


def run_links(per_run: pd.DataFrame, ui: str | None) -> pd.DataFrame:
    """The per-run table with each run's page in the MLflow UI."""
    cols = ["name", "pruned", "seed", "final acc %", "E end", "run page"]
    rows = [{"name": r["name"], "pruned": r.label, "seed": r.seed,
             "final acc %": f"{100 * r.final_acc:.1f}", "E end": f"{r.E_final:.4g}",
             "run page": links.run_page(ui, r.experiment_id, r.run_id) if ui else r.run_id}
            for _, r in per_run.iterrows()]
    return pd.DataFrame(rows, columns=cols)
