"""Build a report: pull runs from MLflow (the latest sweep, a named one, an experiment) or read a
tidy table, assemble it, write its files and log it back to the store as a report run."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.measure.setting import Setting
from emergence_lab.report import safe, tidy
from emergence_lab.report.assemble import ReportError, build, load_runs
from emergence_lab.report.ending import ending
from emergence_lab.report.landscape import load_planes, plane_figure
from emergence_lab.report.page import write
from emergence_lab.report.sections import folder_name, parent_fields, parent_note
from emergence_lab.store import artifacts, connection, links, records, survey, sweeps

ENDING_FILE = "ending.txt"  # what `make sweep` prints at its end (scripts/report.py)
# The most rows --from-table reports on: beyond, the claims' resampling takes longer than anyone
# waits (measured: docs/performance.md); a table of more is refused before it is parsed.
MAX_TABLE_BYTES = 100 * 2**20  # 50,000 rows of the tidy table's columns: under 10 MB
MAX_TABLE_ROWS = 50_000  # 40,000 rows (2,000 runs of 20 epochs) take 48 s on 2 cores, 200,000
# over 5 minutes (the claims' resampling and rank correlations grow faster than the rows)


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
                 setting: Setting | None = None, include_collapsed: bool = False) -> Path:
    """Pull a sweep (by parent run id; default the latest) or an experiment, and write its report."""
    if _read_only(uri, log_back):  # a store this process cannot write: a copy of it is read
        with survey.readable_copy(uri) as copy:
            return build_report(copy, sweep, experiment, out, False, stop_rule, ui, setting,
                                include_collapsed)
    if experiment:
        runs, expected, name, exp_id = _own_runs(uri, experiment), None, experiment, None
    else:
        parent = _sweep_parent(uri, sweep) if sweep else sweeps.latest_sweep(uri)
        if parent is None:
            raise ReportError(f"no sweep in {uri}: run one first (make sweep)")
        expected = artifacts.load_json(uri, parent.info.run_id, "sweep_jobs.json")
        if not all(isinstance(j, dict) for j in expected or []):
            expected = None  # a sweep recorded before cells had hashes: no missing-cell check
        hashes = [j["config_hash"] for j in expected or []]
        runs = sweeps.sweep_runs(uri, parent.info.run_id, hashes)
        name, exp_id = safe.printable(parent.info.run_name), parent.info.experiment_id
    parent_id = None if experiment else parent.info.run_id
    if not runs:
        raise ReportError(f"no runs for {'experiment ' + experiment if experiment else name} in {uri}")
    old = connection.needs_migration(uri, [r.info.experiment_id for r in runs])
    if old:
        print(f"note: experiment {', '.join(old)} was written by an older emergence-lab; run "
              f"`.venv/bin/python scripts/migrate_store.py --tracking-uri {uri}` (--dry-run first) "
              f"so that sweeps find its finished cells", file=sys.stderr)
    out_dir = Path(out) if out else Path("reports") / folder_name(name)
    _check_writable(out_dir, "--out" if out else "the report folder")
    runs_df, hist = load_runs(uri, runs)
    address = links.ui_address(uri, ui)
    rep = build(name, runs_df, hist, expected, stop_rule, address, setting,
                include_collapsed=include_collapsed)
    _add_planes(rep, uri)
    launch = json.loads(parent.data.tags.get(sweeps.LAUNCH_TAG, "null")) if parent_id else None
    sweep_url = links.run_page(address, parent.info.experiment_id, parent_id) if parent_id else None
    files = _write_whole(rep, out_dir, ending(rep, str(out_dir), launch, sweep_url) + "\n")
    if log_back:
        exp_id = exp_id or runs[0].info.experiment_id
        report_id = artifacts.log_report(uri, exp_id, f"report-{name}", [r.info.run_id for r in runs],
                                        files, {"report_of": name}, of=parent_id)
        if parent_id:  # the sweep's page says what it found and where the report is
            # links relative to the UI that shows the note, whatever its host and port
            link = links.run_page("", exp_id, report_id, "artifactPath/report/report.html")
            compare = links.metric_page("", exp_id, list(rep.per_run.run_id), [mk.E, mk.TEST_ACC])
            records.set_note(uri, parent_id, parent_note(rep, link, compare))
            metrics, tags = parent_fields(rep)
            records.log_series(uri, parent_id, {k: [(0, v)] for k, v in metrics.items()})
            records.set_run_tags(uri, parent_id, tags)
    return out_dir


def _own_runs(uri: str, experiment: str) -> list:
    """The experiment's training runs that this tool made (tag config_hash); a ReportError
    when it holds runs but none of ours (another project's experiment, left alone)."""
    runs = records.experiment_runs(uri, experiment)
    own = [r for r in runs if "config_hash" in r.data.tags]
    if runs and not own:
        raise ReportError(f"experiment {experiment} holds {len(runs)} runs and none of "
                          f"emergence-lab's (no run has the tag config_hash): another project's "
                          f"experiment, left alone; name one of this tool's with --experiment")
    return own


def _read_only(uri: str, log_back: bool) -> bool:
    """Whether the store is an SQLite file this process cannot write (then, with --no-log, the
    report reads a copy of it); a ReportError for a store that cannot be used."""
    store = connection.sqlite_file(uri)
    if store is not None and not store.is_file():
        raise ReportError(f"no MLflow store at {uri}: run a sweep first (make sweep) "
                          "or pass --tracking-uri")
    if store is not None and not connection.writable(uri):
        if log_back:
            raise ReportError(f"the store {uri} cannot be written (read-only): report on it "
                              f"with --no-log (make report REPORT_ARGS=--no-log), which reads a "
                              f"copy and logs nothing back")
        print(f"note: the store {uri} cannot be written: the report reads a copy of it",
              file=sys.stderr)
        return True
    try:
        connection.check_reachable(uri)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    return False


def _write_whole(rep, out_dir: Path, ending_text: str | None = None) -> list[Path]:
    """The report's files, written into a temporary folder beside `out_dir` and then moved
    in one by one (os.replace): stopped while it writes (Ctrl-C), the previous report stays
    whole; other files in `out_dir` are left alone. Returns the files, in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".report-", dir=out_dir) as tmp:
        files = write(rep, Path(tmp))
        if ending_text is not None:
            files.append(Path(tmp) / ENDING_FILE)
            files[-1].write_text(ending_text)
        for f in files:
            os.replace(f, out_dir / f.name)
    return [out_dir / f.name for f in files]


def _add_planes(rep, uri: str) -> None:
    """The landscape planes of the runs that stored one (landscape=full), as a figure per
    group beside the landscape's lines."""
    if rep.landscape:
        for group, planes in load_planes(uri, rep.per_run[rep.per_run.group.isin(
                list(rep.landscape))]).items():
            rep.figures[group]["landscape_plane"] = plane_figure(planes, group)


def _read_table(file: Path, path: str) -> pd.DataFrame:
    """The table, its rows counted first as pandas reads them (compressed, any line ending) and
    refused past MAX_TABLE_ROWS; only a regular file of at most MAX_TABLE_BYTES is read (not
    /dev/zero, a pipe, a 10 GB file). Its text values made printable (safe.printable)."""
    if not file.is_file():
        raise ReportError(f"--from-table {path}: not a regular file (a CSV file, or one "
                          f"compressed: .gz, .bz2, .zip, .xz)")
    if file.stat().st_size > MAX_TABLE_BYTES:
        raise ReportError(f"--from-table {path}: {file.stat().st_size / 2**20:,.0f} MB, more "
                          f"than the {MAX_TABLE_BYTES // 2**20} MB a table of "
                          f"{MAX_TABLE_ROWS:,} rows needs: report a part of it at a time")
    rows = sum(len(c) for c in pd.read_csv(file, usecols=[0], chunksize=100_000))
    if rows > MAX_TABLE_ROWS:
        raise ReportError(f"--from-table {path}: {rows:,} rows, more than the "
                          f"{MAX_TABLE_ROWS:,} a report reads in about a minute (2,000 runs "
                          f"of 20 epochs, 40,000 rows, take 48 s): report a part of it at a "
                          f"time (one group, fewer epochs)")
    table = pd.read_csv(file)
    text = table.select_dtypes(exclude="number").columns
    return table.assign(**{c: table[c].map(safe.printable) for c in text})


def build_report_from_table(path: str, out: str | None = None, stop_rule: tuple[float, int] = (
        0.0, 3), setting: Setting | None = None) -> Path:
    """The whole report from a tidy table (tidy.py), with no MLflow store: reports/<file stem>/
    unless `out`."""
    file = Path(path)
    try:
        table = _read_table(file, path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, EOFError) as exc:
        raise ReportError(f"--from-table {path}: cannot be read as CSV ({exc})") from None
    try:
        runs, hist, table_gaps = tidy.from_table(table, f"--from-table {path}")
    except tidy.TableError as exc:
        raise ReportError(str(exc)) from None
    out_dir = Path(out) if out else Path("reports") / folder_name(file.stem)
    _check_writable(out_dir, "--out" if out else "the report folder")
    rep = build(file.stem, runs, hist, None, stop_rule, None, setting, labelled=True,
                table_gaps=table_gaps)
    _write_whole(rep, out_dir)
    return out_dir
