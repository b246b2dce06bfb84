"""A report's content from a store's runs: the per-run and summary tables, the claims' tests,
the θ sensitivity, the sparsity and stopping analyses, the calibration (`build` makes a `Report`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.measure.counting import COUNTINGS
from emergence_lab.measure.keys import RELATIVE_THETA_KEYS, THETA_KEYS
from emergence_lab.measure.setting import Setting
from emergence_lab.report import decompose, landscape, safe, tidy, verdicts
from emergence_lab.report.analyses import (
    calibration,
    stopping_comparison,
    theta_table,
)
from emergence_lab.report.figures import group_figures, sensitivity_figure
from emergence_lab.report.groups import completeness, dedupe
from emergence_lab.report.table import per_run_table, summary_table
from emergence_lab.store import histories, ledger

METRIC_KEYS = [mk.TEST_ACC, mk.TRAIN_ACC, mk.TEST_LOSS, mk.TRAIN_LOSS, mk.VAL_ACC, mk.VAL_LOSS, mk.E,
               mk.RELATIVE, mk.E_MAX, mk.E_AFTER, mk.RELATIVE_AFTER,
               mk.TEST_ACC_AFTER, mk.PARAMS, mk.SPARSITY, mk.EPOCH_TIME,
               *verdicts.SPARSITY_KEYS, *mk.LANDSCAPE_KEYS]


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
    e_summaries: pd.DataFrame | None = None  # lowers_E under other summaries and offsets
    landscape: dict[str, pd.DataFrame] | None = None  # group -> the measures per arm and epoch


def load_runs(uri: str, runs: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs table, long metric history) of MLflow runs."""
    tags = ("error", "overrides", "dataset_label", "stopped_early_at", "config_hash",
            mk.COLLAPSED_TAG, "git_commit", "git_state")
    rows = [{"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
             "start_time": r.info.start_time, "experiment_id": r.info.experiment_id,
             **{t: r.data.tags.get(t, "") for t in tags},
             **{k: v for k, v in r.data.params.items() if not k.startswith(ledger.LEASE_PREFIX)}}
            for r in runs]
    rows = [{k: safe.printable(v) for k, v in row.items()} for row in rows]  # a store's text
    grid = sorted({k for r in runs for k in r.data.metrics if k.startswith(GRID_PREFIXES)})
    hist = histories.metric_histories(uri, [r.info.run_id for r in runs], METRIC_KEYS + grid)
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
    first = [paper.with_counting(k).normalized() for k in COUNTINGS.names()]
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
    return {k: mk.setting_keys(setting.with_counting(k)) for k in COUNTINGS.names()}


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


def versions(runs: pd.DataFrame) -> pd.Series:
    """Each run's code version: its commit (12 digits) and, for an edited tree, its state ('' for
    a run that did not record it)."""
    if "git_commit" not in runs:
        return pd.Series("", index=runs.index)
    state = runs.get("git_state", pd.Series("", index=runs.index)).fillna("").astype(str)
    return runs.git_commit.fillna("").astype(str).str[:12] + state.map(
        lambda s: f" ({s})" if s and s != "clean" else "")


def code_versions(runs: pd.DataFrame) -> list[str]:
    """One line per code version when the compared runs were made by more than one (a commit,
    and whether its tree was edited: git_state); [] when they agree or did not record it."""
    if "git_commit" not in runs:
        return []
    version = versions(runs)
    counts = version[runs.git_commit.fillna("").astype(str) != ""].value_counts()
    if len(counts) < 2:
        return []
    return [f"{v}: {n} runs" for v, n in counts.items()]


def _collapsed(runs: pd.DataFrame, include: bool) -> tuple[pd.DataFrame, list[str]]:
    """(the runs the report counts, a line per collapsed run): collapsed runs are counted only
    when `include`."""
    flagged = runs.get(mk.COLLAPSED_TAG, pd.Series("", index=runs.index)).fillna("").astype(bool)
    lines = [f"{r['name']}: {r[mk.COLLAPSED_TAG]}" + (" (counted: --include-collapsed)" if include
                                                      else "") for _, r in runs[flagged].iterrows()]
    return (runs if include else runs[~flagged]), lines


def build(name: str, runs: pd.DataFrame, hist: pd.DataFrame,
          expected_jobs: list[list[str]] | None, stop_rule: tuple[float, int] = (0.0, 3),
          ui: str | None = None, setting: Setting | None = None, labelled: bool = False,
          table_gaps: Mapping[str, list[str]] | None = None, include_collapsed: bool = False
          ) -> Report:
    """All tables, verdicts and figures of a report (no I/O), E read in `setting` (the paper's
    by default). `labelled`: the runs come from a tidy table (see per_run_table). Collapsed
    runs (tag `collapsed`) are listed apart and left out unless `include_collapsed`."""
    setting = setting or Setting()
    stored, hist = hist, read_in(hist, setting)  # the settings table reads every stored one
    runs, duplicates = dedupe(runs)
    runs, collapsed = _collapsed(runs, include_collapsed)
    per_run = per_run_table(runs, hist, labelled)
    if per_run.empty and collapsed:
        raise ReportError(f"every FINISHED run of {name} collapsed, nothing to compare (pass "
                          f"--include-collapsed to count them anyway): " + "; ".join(collapsed[:3]))
    if per_run.empty:
        raise ReportError(f"no FINISHED runs in {name}: nothing to compare; "
                          + "; ".join(completeness(runs, expected_jobs, per_run)["failed_runs"][:5]))
    per_run["commit"] = per_run.run_id.map(dict(zip(runs.run_id, versions(runs), strict=True)))
    gaps = completeness(runs, expected_jobs, per_run) | {
        "duplicates": duplicates, "never_near_zero": verdicts.never_near_zero(per_run, hist),
        **(table_gaps or {}), "collapsed": collapsed,
        "code_versions": code_versions(runs[runs.run_id.isin(per_run.run_id)])}
    finished = per_run[~per_run.run_id.isin(runs.run_id[runs.stopped_early_at.astype(bool)])]
    sens = verdicts.sensitivity(per_run, stored, sensitivity_keys(stored))
    figures = {g: group_figures(p, hist, g) for g, p in per_run.groupby("group")}
    tables = _landscape(per_run, hist, figures)
    for g, fig in sensitivity_figure(sens).items():
        figures.setdefault(g, {})["theta_sensitivity"] = fig
    return Report(name, per_run, summary_table(per_run), verdicts.claim_tests(per_run, hist), gaps,
                  figures, theta_table(per_run, hist), sens,
                  verdicts.sparsity_controls(per_run, hist),
                  stopping_comparison(finished, hist, *stop_rule), verdicts.best_lr(per_run),
                  calibration(per_run), stop_rule, ui, setting.describe(),
                  tidy.to_table(per_run, stored),
                  decompose.relative_e_explained(per_run, stored, _countings(setting)),
                  decompose.e_summaries(per_run, hist), tables)


def _landscape(per_run: pd.DataFrame, hist: pd.DataFrame, figures: dict
               ) -> dict[str, pd.DataFrame]:
    """The landscape's table per group, its lines added to the group's figures (its planes, in
    the store, are build_report's)."""
    tables = {}
    for g, p in per_run.groupby("group"):
        table = landscape.landscape_table(p, hist)
        if table.empty:
            continue
        tables[g] = table
        figures[g]["landscape"] = landscape.landscape_figure(p, hist, g)
    return tables
