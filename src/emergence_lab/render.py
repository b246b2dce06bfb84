"""Build a report: pull runs from MLflow, compute the tables, draw the plots, write Markdown,
HTML (images embedded) and CSV, and log the report back as an MLflow run."""

from __future__ import annotations

import base64
import html
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from emergence_lab import tracking
from emergence_lab.analyses import THETA_PREFIX, stopper_table, theta_table
from emergence_lab.figures import group_figures
from emergence_lab.report import claims, completeness, dedupe, per_run_table, summary_table

METRIC_KEYS = ["test/acc", "train/acc", "emergence/E", "emergence/relative", "pruning/E_after",
               "pruning/relative_after", "pruning/test_acc_after", "params/nonzero",
               "pruning/sparsity", "time/epoch_s"]


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
    claims: pd.DataFrame
    gaps: dict[str, list[str]]
    figures: dict[str, dict[str, plt.Figure]]  # group -> stem -> figure
    thetas: pd.DataFrame  # final E by threshold
    stopper: pd.DataFrame  # when the emergence-based stopper would have fired
    stop_rule: tuple[float, int]  # (epsilon, patience)


def load_runs(uri: str, runs: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs table, long metric history) of MLflow runs."""
    tags = ("error", "overrides", "dataset_label", "stopped_early_at", "config_hash")
    rows = [{"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
             "start_time": r.info.start_time, **{t: r.data.tags.get(t, "") for t in tags},
             **{k: v for k, v in r.data.params.items() if not k.startswith(tracking.LEASE_PREFIX)}}
            for r in runs]
    grid = sorted({k for r in runs for k in r.data.metrics if k.startswith(THETA_PREFIX)})
    hist = tracking.metric_histories(uri, [r.info.run_id for r in runs], METRIC_KEYS + grid)
    hist = pd.DataFrame(hist, columns=["run_id", "key", "step", "value"])
    # a step logged twice (by a store written before runs had owners) counts once: the last
    return pd.DataFrame(rows), hist.drop_duplicates(["run_id", "key", "step"], keep="last")


def build(name: str, runs: pd.DataFrame, hist: pd.DataFrame,
          expected_jobs: list[list[str]] | None, stop_rule: tuple[float, int] = (0.0, 3)
          ) -> Report:
    """All tables, verdicts and figures of a report (no I/O)."""
    runs, duplicates = dedupe(runs)
    per_run = per_run_table(runs, hist)
    if per_run.empty:
        raise ReportError(f"no FINISHED runs in {name}: nothing to compare; "
                          + "; ".join(completeness(runs, expected_jobs, per_run)["failed_runs"][:5]))
    gaps = completeness(runs, expected_jobs, per_run) | {"duplicates": duplicates}
    finished = per_run[~per_run.run_id.isin(runs.run_id[runs.stopped_early_at.astype(bool)])]
    return Report(name, per_run, summary_table(per_run), claims(per_run, hist), gaps,
                  {g: group_figures(p, hist, g) for g, p in per_run.groupby("group")},
                  theta_table(per_run, hist), stopper_table(finished, hist, *stop_rule),
                  stop_rule)


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
         gaps.get("duplicates", []))) if items]
    return parts or [("", ["The sweep is complete: every cell has a FINISHED run."])]


NOTES = ("Cells: mean ± half-width of the 95 % t-interval over seeds (no ± with one seed). "
         "Accuracies are test accuracies; Δ is paired by seed with the unpruned control "
         "(amount 0). Convergence counts epochs after the prune epoch. AUC: area under the "
         "test-accuracy curve from the network just after pruning to the last epoch "
         "(accuracy × epochs). E before/after: just before and just after pruning. The paper's "
         "column: its section 4 (one seed; the split is not stated). Claims: 'holds' when the 95 % "
         "interval excludes zero on the claimed side; 'does not hold' when it does not (on this "
         "sweep; with one seed and few levels the interval is wide); 'not enough data' below "
         "two paired differences.")


def sections(rep: Report) -> list[tuple[int, str, object]]:
    """The report's content in order: (heading level, heading, table | image stems | lines)."""
    out: list[tuple[int, str, object]] = []
    if len(rep.figures) > 1:
        out.append((2, "Overview: every cell of every group", display_table(
            rep.summary, columns=OVERVIEW)))
    for group in sorted(rep.figures):
        out.append((2, group, display_table(rep.summary, group)))
        out.append((3, "Final E by threshold θ (same activations)",
                    rep.thetas[rep.thetas.group == group].drop(columns="group")))
        out.append((0, "", [f"{slug(group)}__{stem}" for stem in rep.figures[group]]))
    out.append((2, "The paper's claims on this sweep",
                rep.claims[["statement", "verdict", "evidence"]]))
    eps, patience = rep.stop_rule
    out.append((2, f"Emergence-based stopping (E <= {eps:g} for {patience} epochs, after the "
                   f"last pruning step; runs trained to the end)", rep.stopper))
    out.append((2, "Completeness", []))
    out += [(3, title, items) for title, items in _gaps(rep.gaps)]
    return out


def markdown(rep: Report) -> str:
    """The report as Markdown."""
    lines = [f"# Pruning versus convergence: {rep.name}", "", NOTES, ""]
    for level, title, body in sections(rep):
        lines += [f"{'#' * level} {title}", ""] if title else []
        if isinstance(body, pd.DataFrame):
            lines += [body.to_markdown(index=False) if not body.empty else "(none)", ""]
        elif level == 0:
            lines += [f"![{stem}]({stem}.png)" for stem in body] + [""]
        elif body:
            lines += [f"- {item}" for item in body] + [""]
    return "\n".join(lines)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}" style="max-width:100%">'


def html_page(rep: Report, out: Path) -> str:
    """The report as one self-contained HTML page (PNG images embedded)."""
    parts = [f"<h1>Pruning versus convergence: {html.escape(rep.name)}</h1><p>{NOTES}</p>"]
    for level, title, body in sections(rep):
        parts += [f"<h{level}>{html.escape(title)}</h{level}>"] if title else []
        if isinstance(body, pd.DataFrame):
            parts.append(body.to_html(index=False, border=0) if not body.empty else "<p>(none)</p>")
        elif level == 0:
            parts += [_img(out / f"{stem}.png") for stem in body]
        elif body:
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in body) + "</ul>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "font-size:12px}td,th{padding:3px 6px;border-bottom:1px solid #ddd}")
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
    rep.claims.to_csv(out / "claims.csv", index=False)
    rep.per_run.to_csv(out / "runs.csv", index=False)
    rep.thetas.to_csv(out / "thetas.csv", index=False)
    rep.stopper.to_csv(out / "stopper.csv", index=False)
    (out / "report.md").write_text(markdown(rep))
    (out / "report.html").write_text(html_page(rep, out))


def _sweep_parent(uri: str, run_id: str):
    """The parent run of a sweep by id; a ReportError for an unknown id or another kind of run."""
    run = tracking.find_run(uri, run_id)
    if run is None:
        raise ReportError(f"--sweep {run_id}: no such run in {uri}; make ui lists the sweeps "
                          f"(runs tagged kind=sweep), or omit --sweep for the latest")
    if run.data.tags.get("kind") != "sweep":
        parent = run.data.tags.get(tracking.PARENT_TAG)
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
                 stop_rule: tuple[float, int] = (0.0, 3)) -> Path:
    """Pull a sweep (by parent run id; default the latest) or an experiment, and write its report."""
    store = tracking.local_store_dir(uri)
    if store is not None and not Path(tracking.resolve_uri(uri)[len("sqlite:///"):]).is_file():
        raise ReportError(f"no MLflow store at {uri}: run a sweep first (make sweep) "
                          "or pass --tracking-uri")
    if experiment:
        runs, expected, name, exp_id = tracking.experiment_runs(uri, experiment), None, experiment, None
    else:
        parent = _sweep_parent(uri, sweep) if sweep else tracking.latest_sweep(uri)
        if parent is None:
            raise ReportError(f"no sweep in {uri}: run one first (make sweep)")
        expected = tracking.load_json(uri, parent.info.run_id, "sweep_jobs.json")
        if not all(isinstance(j, dict) for j in expected or []):
            expected = None  # a sweep recorded before cells had hashes: no missing-cell check
        hashes = [j["config_hash"] for j in expected or []]
        runs = tracking.sweep_runs(uri, parent.info.run_id, hashes)
        name, exp_id = parent.info.run_name, parent.info.experiment_id
    if not runs:
        raise ReportError(f"no runs for {'experiment ' + experiment if experiment else name} in {uri}")
    out_dir = Path(out) if out else Path("reports") / slug(name)
    _check_writable(out_dir, "--out" if out else "the report folder")
    runs_df, hist = load_runs(uri, runs)
    rep = build(name, runs_df, hist, expected, stop_rule)
    write(rep, out_dir)
    if log_back:
        exp_id = exp_id or runs[0].info.experiment_id
        tracking.log_report(uri, exp_id, f"report-{name}", [r.info.run_id for r in runs], out_dir,
                            {"report_of": name})
    return out_dir
