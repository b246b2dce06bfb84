"""Build a report: pull runs from MLflow, compute the tables, draw the plots, write Markdown,
HTML (images embedded) and CSV, and log the report back as an MLflow run."""

from __future__ import annotations

import base64
import html
import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.measure.keys import RELATIVE_THETA_KEYS, THETA_KEYS
from emergence_lab.measure.setting import Setting
from emergence_lab.report import tidy, verdicts
from emergence_lab.report.analyses import (
    calibration,
    stopping_by_run,
    stopping_comparison,
    stopping_summary,
    theta_table,
)
from emergence_lab.report.figures import group_figures, sensitivity_figure
from emergence_lab.report.table import completeness, dedupe, per_run_table, summary_table
from emergence_lab.store import artifacts, connection, ledger, links, records, sweeps

METRIC_KEYS = [mk.TEST_ACC, mk.TRAIN_ACC, mk.TEST_LOSS, mk.TRAIN_LOSS, mk.VAL_ACC, mk.VAL_LOSS, mk.E,
               mk.RELATIVE, mk.E_AFTER, mk.RELATIVE_AFTER,
               mk.TEST_ACC_AFTER, mk.PARAMS, mk.SPARSITY, mk.EPOCH_TIME,
               *verdicts.SPARSITY_KEYS]
GRID_PREFIXES = (*THETA_KEYS.values(), *RELATIVE_THETA_KEYS.values(), mk.E + "/",
                 mk.RELATIVE + "/")  # the θ grid and every stored analysis setting


class ReportError(Exception):
    """A report cannot be built (no store, no runs); carries the exit code."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


@dataclass
class Report:
    name: str
    per_run: pd.DataFrame
    summary: pd.DataFrame
    tests: pd.DataFrame  # every claim test (verdicts.claim_tests)
    gaps: dict[str, list[str]]
    figures: dict[str, dict[str, plt.Figure]]  # group -> stem -> figure
    thetas: pd.DataFrame  # final E by threshold
    sensitivity: pd.DataFrame  # the E claims by activity mode and threshold
    sparsity: pd.DataFrame  # E against the sparsity baselines
    stopping: pd.DataFrame  # when each stopper would have fired, per run
    lr: pd.DataFrame  # each level at its best lr after pruning
    calibration: pd.DataFrame  # the paper's open choices by distance to its numbers
    stop_rule: tuple[float, int]  # (epsilon, patience)
    ui: str | None = None  # the MLflow UI's address, for links to run pages
    setting: str = Setting().describe()  # the analysis setting E is read in
    epochs: pd.DataFrame | None = None  # the tidy table (tidy.py): one row per run and epoch
    rel_explained: pd.DataFrame | None = None  # relative E = E's change minus the parameters'


def load_runs(uri: str, runs: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs table, long metric history) of MLflow runs."""
    tags = ("error", "overrides", "dataset_label", "stopped_early_at", "config_hash")
    rows = [{"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
             "start_time": r.info.start_time, "experiment_id": r.info.experiment_id,
             **{t: r.data.tags.get(t, "") for t in tags},
             **{k: v for k, v in r.data.params.items() if not k.startswith(ledger.LEASE_PREFIX)}}
            for r in runs]
    grid = sorted({k for r in runs for k in r.data.metrics if k.startswith(GRID_PREFIXES)})
    hist = records.metric_histories(uri, [r.info.run_id for r in runs], METRIC_KEYS + grid)
    hist = pd.DataFrame(hist, columns=["run_id", "key", "step", "value"])
    # a step logged twice (by a store written before runs had owners) counts once: the last
    return pd.DataFrame(rows), hist.drop_duplicates(["run_id", "key", "step"], keep="last")


def sensitivity_keys(hist: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Setting label (e.g. 'mean θ=0.05, edges') -> (E key, relative E key) for every analysis
    setting the runs logged: the paper's and its edges counting first, then the other stored
    settings, then the θ grid of runs logged before settings had mk."""
    logged = set(hist.key.unique())
    out: dict[str, tuple[str, str]] = {}
    found = [(s, k) for k in logged if (s := mk.parse_setting(k)) is not None]
    paper = Setting()
    first = [paper.normalized(), paper.with_counting("edges").normalized()]
    order = sorted(found, key=lambda sk: (first.index(sk[0].normalized()) if sk[0].normalized()
                                          in first else 2, sk[0].rule, sk[0].counting, sk[0].theta))
    for s, k in order:
        out.setdefault(s.describe(), (k, mk.relative_of(k)))
    for mode, prefix in THETA_KEYS.items():
        thetas = sorted({k[len(prefix):] for k in logged if k.startswith(prefix)}, key=float)
        for theta in thetas:
            label = Setting(mode, float(theta)).describe()
            out.setdefault(label, (prefix + theta, RELATIVE_THETA_KEYS[mode] + theta))
    return out if len(out) > 1 else {}  # the paper's setting alone is the verdict table


def _countings(setting: Setting) -> dict[str, tuple[str, str]]:
    """(E key, relative E key) of the setting under each route counting."""
    return {k: mk.setting_keys(setting.with_counting(k)) for k in ("units", "edges")}


def read_in(hist: pd.DataFrame, setting: Setting) -> pd.DataFrame:
    """The history with E and relative E in `setting` under emergence/E and emergence/relative
    (every claim, table and figure then reads that setting)."""
    e_key, rel_key = mk.setting_keys(setting)
    if (e_key, rel_key) == (mk.E, mk.RELATIVE):
        return hist
    if not hist.key.eq(e_key).any():
        stored = sorted(sensitivity_keys(hist))
        raise ReportError(f"--setting {setting.describe()}: these runs stored no {e_key}; stored "
                          f"settings: {stored} (a sweep with that threshold group over the same "
                          f"cells adds it without training)")
    rest = hist[~hist.key.isin([mk.E, mk.RELATIVE])]
    moved = hist[hist.key.isin([e_key, rel_key])].replace({"key": {e_key: mk.E, rel_key: mk.RELATIVE}})
    return pd.concat([rest, moved], ignore_index=True)


def build(name: str, runs: pd.DataFrame, hist: pd.DataFrame,
          expected_jobs: list[list[str]] | None, stop_rule: tuple[float, int] = (0.0, 3),
          ui: str | None = None, setting: Setting | None = None, labelled: bool = False,
          unpaired: Sequence[str] = ()) -> Report:
    """All tables, verdicts and figures of a report (no I/O), E read in `setting` (the paper's
    by default). `labelled`: the runs come from a tidy table (see per_run_table)."""
    setting = setting or Setting()
    stored, hist = hist, read_in(hist, setting)  # the settings table reads every stored one
    runs, duplicates = dedupe(runs)
    per_run = per_run_table(runs, hist, labelled)
    if per_run.empty:
        raise ReportError(f"no FINISHED runs in {name}: nothing to compare; "
                          + "; ".join(completeness(runs, expected_jobs, per_run)["failed_runs"][:5]))
    gaps = completeness(runs, expected_jobs, per_run) | {
        "duplicates": duplicates, "never_near_zero": verdicts.never_near_zero(per_run, hist),
        "unpaired": list(unpaired)}
    finished = per_run[~per_run.run_id.isin(runs.run_id[runs.stopped_early_at.astype(bool)])]
    sens = verdicts.sensitivity(per_run, stored, sensitivity_keys(stored))
    figures = {g: group_figures(p, hist, g) for g, p in per_run.groupby("group")}
    for g, fig in sensitivity_figure(sens).items():
        figures.setdefault(g, {})["theta_sensitivity"] = fig
    return Report(name, per_run, summary_table(per_run), verdicts.claim_tests(per_run, hist), gaps,
                  figures, theta_table(per_run, hist), sens,
                  verdicts.sparsity_controls(per_run, hist),
                  stopping_comparison(finished, hist, *stop_rule), verdicts.best_lr(per_run),
                  calibration(per_run), stop_rule, ui, setting.describe(),
                  tidy.to_table(per_run, stored),
                  verdicts.relative_e_explained(per_run, stored, _countings(setting)))


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
        rows.append(row)
    return pd.DataFrame(rows)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:80] or "all"


def _gaps(gaps: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    parts = [(title, items) for title, items in (
        ("Missing cells", gaps["missing_jobs"]), ("Failed runs", gaps["failed_runs"]),
        ("Incomplete groups", gaps["incomplete_groups"]),
        ("Duplicates (same config_hash: one measurement, counted once)",
         gaps.get("duplicates", [])),
        ("E never near zero after pruning (the plateau claim cannot use these runs)",
         gaps.get("never_near_zero", [])),
        ("Unpaired runs (no control of their seed: not compared, not guessed)",
         gaps.get("unpaired", []))) if items]
    return parts or [("", ["The sweep is complete: every cell has a FINISHED run."])]


NOTES = ("Replicates are seeds. Each claim is tested on differences pruned minus control paired "
         "by seed (n = seeds), per pruning level, and across levels on each seed's mean "
         "difference over the levels. Holm's correction: one family is " + verdicts.HOLM_FAMILY +
         ", in every table (the settings table's paper-setting row shows the main table's p). "
         "Verdicts: "
         "'supported' when the Holm-corrected test is significant (α = 0.05) on the claimed side, "
         "'contradicted' when significant on the other side, 'inconclusive' when not (its "
         "95 % interval includes 0; the seeds that would detect the observed effect at 80 % "
         "power follow), 'not enough data' below two paired differences. Effects: mean [95 % "
         "t-interval], in points of accuracy, epochs or % of the control's E. Tables: mean ± "
         "half-width of the 95 % t-interval over seeds. Accuracies are test accuracies unless "
         "marked train; convergence counts epochs after the prune epoch.")

TOP_COLUMNS = [  # (header, summary columns, format): at most 8 columns per group
    ("final acc %", ["final_acc"], "pct"), ("Δ vs control (pts)", ["d_final_acc"], "pct"),
    ("epochs to converge", ["epochs_to_common_target"], "f"),
    ("E before → after → end", ["E_before", "E_after", "E_final"], "e"),
    ("relative E end", ["relE_final"], "e")]


def one_sentence(rep: Report) -> str:
    """The sweep in one sentence."""
    p = rep.per_run
    groups, seeds = p.group.nunique(), sorted(p.seed.unique())
    cells = p.groupby(["group", "label"]).ngroups
    epochs = int(p.last_epoch.max())
    prune = sorted(set(p.prune_epoch[p.level > 0]))
    when = f"pruned after epoch {', '.join(map(str, prune))}" if prune else "nothing pruned " \
        "(controls only)"
    return (f"{rep.name}: {len(p)} FINISHED runs, {cells} cells ({p.label.nunique()} pruning "
            f"arms incl. the control{'' if groups == 1 else f' in {groups} groups'}) × "
            f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}), "
            f"{epochs} epochs, {when}.")


def paper_numbers(summary: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(group, scope) -> the paper's own change in final accuracy (points, its table), where the
    group follows its protocol: what costs_accuracy is beside."""
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
        row |= {"pruned": scope, "verdict": verdicts.verdict_text(r),
                "effect [95 % CI]": verdicts.effect_text(r), "n seeds": int(r.n),
                "Holm p": "–" if math.isnan(r.p_holm) else f"{r.p_holm:.3g}"}
        if explain and claim is not None:
            if paper:
                row["paper"] = paper.get((r.group, r.scope), "–") if r.claim == "costs_accuracy" \
                    else "–"
            row["caveat"] = claim.caveat + _rel_note(rel, r)
        rows.append(row)
    return pd.DataFrame(rows)


def _rel_note(rel: pd.DataFrame | None, r: pd.Series) -> str:
    if rel is None or rel.empty or r.claim != "raises_relative_E":
        return ""
    here = rel[(rel.group == r.group) & (rel.strategy == r.strategy) & (rel.counting == "units")
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


Section = tuple[int, str, object, bool]  # (heading level, title, body, collapsed in HTML)


def sections(rep: Report) -> list[Section]:
    """The report's content in order: the part read in a minute first, the full tables after."""
    several = len(rep.figures) > 1
    out: list[Section] = [(0, "", one_sentence(rep), False),
                          (0, "", f"E is read in the setting {rep.setting}"
                           + (" (the paper's; `--setting` reads another)." if rep.setting ==
                              Setting().describe() else ".") + " Convergence, the plateau claim and "
                           "the patience stopper read " + (
                               "validation accuracy (dataset.val_fraction)." if not rep.per_run.empty
                               and (rep.per_run.selection_key == mk.VAL_ACC).all() else
                               "test accuracy: the runs have no validation split "
                               "(dataset.val_fraction=0.1 holds one out)."), False)]
    head = verdicts.headline(rep.tests)
    out.append((2, "Verdicts", verdict_table(head, several, explain=True, rel=rep.rel_explained,
                                             paper=paper_numbers(rep.summary)), False))
    for group in sorted(rep.figures):
        out.append((3 if several else 2, group if several else "Per pruning level",
                    top_table(rep.summary, group), False))
    out.append((2, "Full tables", [], False))
    out.append((3, "Every test (per level and across levels)", verdict_table(rep.tests, several),
                True))
    if len(rep.figures) > 1:
        out.append((3, "Overview: every cell of every group",
                    display_table(rep.summary, columns=OVERVIEW), True))
    for group in sorted(rep.figures):
        out.append((3, group, display_table(rep.summary, group), True))
        paper = paper_table(rep.summary, group)
        if not paper.empty:
            out.append((4, "The paper's accuracies beside ours (train and test)", paper, False))
        rel = rel_table(rep.rel_explained, group)
        if not rel.empty:
            out.append((4, "Relative E explained: the change in E and in parameters (their "
                           "log-ratios add up), under both countings", rel, False))
        out.append((4, "Verdict by analysis setting: activity rule, θ or τ, route counting "
                       "(the same stored measurements; units: the paper's formula, edges: "
                       "surviving connections only)", sensitivity_table(rep.sensitivity, group),
                    False))
        if not rep.thetas.empty and len(rep.thetas.columns) > 3:
            out.append((4, "Final E by threshold θ", rep.thetas[rep.thetas.group == group]
                        .drop(columns="group"), True))
        if not rep.sparsity.empty:
            out.append((4, "Is E just sparsity? Correlation with the test accuracy still to come "
                           "(Spearman, each run's epochs after pruning; '|': sparsity baselines "
                           "partialled out)", sparsity_table(rep.sparsity, group), False))
        out.append((-1, "", [f"{slug(group)}__{stem}" for stem in rep.figures[group]], False))
    if not rep.lr.empty:
        for base in sorted(set(rep.lr.group)):
            out.append((3, f"Re-tuned learning rate after pruning: {base}", lr_table(rep.lr, base),
                        False))
    if not rep.calibration.empty:
        out.append((3, "Calibration: the paper's open choices by distance to its accuracies",
                    rep.calibration, False))
    eps, patience = rep.stop_rule
    out.append((3, f"Stopping: E <= {eps:g} for {patience} epochs against the standard "
                   f"criteria (after the last pruning step; runs trained to the end)",
                stopping_summary(rep.stopping), False))
    out.append((4, "Per run: the epoch it fires at (epochs saved, test accuracy given up)",
                stopping_by_run(rep.stopping), True))
    out.append((3, "Runs", run_links(rep.per_run, rep.ui), True))
    out.append((2, "Completeness", [], False))
    out += [(3, title, items, False) for title, items in _gaps(rep.gaps)]
    return out


def markdown(rep: Report) -> str:
    """The report as Markdown."""
    lines = [f"# Pruning versus convergence: {rep.name}", ""]
    for level, title, body, _ in sections(rep):
        lines += [f"{'#' * level} {title}", ""] if title else []
        if isinstance(body, pd.DataFrame):
            lines += [body.to_markdown(index=False) if not body.empty else "(none)", ""]
        elif isinstance(body, str):
            lines += [body, ""]
        elif level < 0:
            lines += [f"![{stem}]({stem}.png)" for stem in body] + [""]
        elif body:
            lines += [f"- {item}" for item in body] + [""]
    claims = [f"- {c.name}: {c.statement} Compared: {c.comparison}; test: {c.test}."
              for c in verdicts.CLAIMS]
    return "\n".join(lines + ["## Notes", "", NOTES, "", "The claims:", "", *claims, ""])


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}" style="max-width:100%">'


def _html_table(body: pd.DataFrame) -> str:
    if body.empty:
        return "<p>(none)</p>"
    if "run page" in body and body["run page"].astype(str).str.startswith("http").any():
        body = body.assign(**{"run page": [f'<a href="{html.escape(u)}">open</a>'
                                           for u in body["run page"]]})
        return body.to_html(index=False, border=0, escape=False)
    return body.to_html(index=False, border=0)


def html_page(rep: Report, out: Path) -> str:
    """The report as one self-contained HTML page (PNG images embedded); the full tables are
    collapsed."""
    parts = [f"<h1>Pruning versus convergence: {html.escape(rep.name)}</h1>"]
    for level, title, body, collapsed in sections(rep):
        inner = []
        if isinstance(body, pd.DataFrame):
            inner.append(_html_table(body))
        elif isinstance(body, str):
            inner.append(f"<p>{html.escape(body)}</p>")
        elif level < 0:
            inner += [_img(out / f"{stem}.png") for stem in body]
        elif body:
            inner.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in body) + "</ul>")
        if collapsed:
            parts.append(f"<details><summary>{html.escape(title)}</summary>{''.join(inner)}</details>")
        else:
            parts += ([f"<h{level}>{html.escape(title)}</h{level}>"] if title else []) + inner
    parts.append(f"<h2>Notes</h2><p>{html.escape(NOTES)}</p><ul>" + "".join(
        f"<li>{c.name}: {html.escape(c.statement)}</li>" for c in verdicts.CLAIMS) + "</ul>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "font-size:12px}td,th{padding:3px 6px;border-bottom:1px solid #ddd}"
             "summary{font-weight:bold;margin:1em 0;cursor:pointer}")
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head>" \
           f"<body>{''.join(parts)}</body></html>"


def write(rep: Report, out: Path) -> None:
    """report.md, report.html, the CSV tables and the PNGs into out."""
    out.mkdir(parents=True, exist_ok=True)
    for group, figs in rep.figures.items():
        for stem, fig in figs.items():
            fig.savefig(out / f"{slug(group)}__{stem}.png", dpi=110)
            plt.close(fig)
    rep.summary.to_csv(out / "summary.csv", index=False)
    rep.tests.to_csv(out / "claims.csv", index=False)
    if rep.epochs is not None:
        rep.epochs.to_csv(out / "epochs.csv", index=False)
    rep.per_run.to_csv(out / "runs.csv", index=False)
    rep.thetas.to_csv(out / "thetas.csv", index=False)
    rep.sensitivity.to_csv(out / "theta_verdicts.csv", index=False)
    rep.sparsity.to_csv(out / "sparsity.csv", index=False)
    if rep.rel_explained is not None:
        rep.rel_explained.to_csv(out / "relative_E.csv", index=False)
    rep.stopping.to_csv(out / "stopping.csv", index=False)
    for name, table in (("lr.csv", rep.lr), ("calibration.csv", rep.calibration)):
        if not table.empty:
            table.to_csv(out / name, index=False)
    (out / "report.md").write_text(markdown(rep))
    (out / "report.html").write_text(html_page(rep, out))


def _sweep_parent(uri: str, run_id: str):
    """The parent run of a sweep by id; a ReportError for an unknown id or another kind of run."""
    run = records.find_run(uri, run_id)
    if run is None:
        raise ReportError(f"--sweep {run_id}: no such run in {uri}; make ui lists the sweeps "
                          f"(runs tagged kind=sweep), or omit --sweep for the latest")
    if run.data.tags.get("kind") != "sweep":
        parent = run.data.tags.get(sweeps.PARENT_TAG)
        hint = f"it is a run of sweep {parent}: use --sweep {parent}" if parent else \
            "use a sweep's parent run id, or --experiment NAME"
        raise ReportError(f"--sweep {run_id} is not a sweep ({hint})")
    return run


def _check_writable(folder: Path, what: str) -> None:
    """Fail before anything is written when the report's folder cannot be."""
    existing = next(p for p in [folder.resolve(), *folder.resolve().parents] if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is a file")
        tempfile.TemporaryFile(dir=existing).close()  # leaves nothing behind
    except OSError as exc:
        raise ReportError(f"{what} {folder} cannot be written ({exc.strerror or exc}); "
                          f"pass --out WRITABLE_FOLDER") from None


def build_report(uri: str, sweep: str | None = None, experiment: str | None = None,
                 out: str | None = None, log_back: bool = True,
                 stop_rule: tuple[float, int] = (0.0, 3), ui: str | None = None,
                 setting: Setting | None = None) -> Path:
    """Pull a sweep (by parent run id; default the latest) or an experiment, and write its report."""
    store = connection.local_store_dir(uri)
    if store is not None and not Path(connection.resolve_uri(uri)[len("sqlite:///"):]).is_file():
        raise ReportError(f"no MLflow store at {uri}: run a sweep first (make sweep) "
                          "or pass --tracking-uri")
    if experiment:
        runs, expected, name, exp_id = records.experiment_runs(uri, experiment), None, experiment, None
    else:
        parent = _sweep_parent(uri, sweep) if sweep else sweeps.latest_sweep(uri)
        if parent is None:
            raise ReportError(f"no sweep in {uri}: run one first (make sweep)")
        expected = artifacts.load_json(uri, parent.info.run_id, "sweep_jobs.json")
        if not all(isinstance(j, dict) for j in expected or []):
            expected = None  # a sweep recorded before cells had hashes: no missing-cell check
        hashes = [j["config_hash"] for j in expected or []]
        runs = sweeps.sweep_runs(uri, parent.info.run_id, hashes)
        name, exp_id = parent.info.run_name, parent.info.experiment_id
    parent_id = None if experiment else parent.info.run_id
    if not runs:
        raise ReportError(f"no runs for {'experiment ' + experiment if experiment else name} in {uri}")
    out_dir = Path(out) if out else Path("reports") / slug(name)
    _check_writable(out_dir, "--out" if out else "the report folder")
    runs_df, hist = load_runs(uri, runs)
    address = links.ui_address(uri, ui)
    rep = build(name, runs_df, hist, expected, stop_rule, address, setting)
    write(rep, out_dir)
    if log_back:
        exp_id = exp_id or runs[0].info.experiment_id
        report_id = artifacts.log_report(uri, exp_id, f"report-{name}", [r.info.run_id for r in runs],
                                        out_dir, {"report_of": name})
        if parent_id:  # the sweep's page says what it found and where the report is
            link = links.run_page(address, exp_id, report_id, "artifactPath/report/report.html")
            records.set_note(uri, parent_id, parent_note(rep, link))
    return out_dir


def build_report_from_table(path: str, out: str | None = None, stop_rule: tuple[float, int] = (
        0.0, 3), setting: Setting | None = None) -> Path:
    """The whole report from a tidy table (tidy.py), with no MLflow store: reports/<file stem>/
    unless `out`."""
    file = Path(path)
    try:
        table = pd.read_csv(file)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReportError(f"--from-table {path}: cannot be read as CSV ({exc})") from None
    try:
        runs, hist, unpaired = tidy.from_table(table, f"--from-table {path}")
    except tidy.TableError as exc:
        raise ReportError(str(exc)) from None
    out_dir = Path(out) if out else Path("reports") / slug(file.stem)
    _check_writable(out_dir, "--out" if out else "the report folder")
    rep = build(file.stem, runs, hist, None, stop_rule, None, setting, labelled=True,
                unpaired=unpaired)
    write(rep, out_dir)
    return out_dir


def parent_note(rep: Report, report_link: str) -> str:
    """The description of a sweep's parent run: its sentence, its verdicts and its report."""
    table = verdict_table(verdicts.headline(rep.tests), len(rep.figures) > 1)
    return "\n\n".join([f"**{one_sentence(rep)}**",
                         table.to_markdown(index=False) if not table.empty else "(no verdicts)",
                         f"Full report: [report.html]({report_link}) (artifact report/ of run "
                         f"report-{rep.name})"])
