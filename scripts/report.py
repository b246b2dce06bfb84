"""Pruning-versus-convergence report of a sweep, pulled from MLflow.

    python scripts/report.py --tracking-uri URI [--sweep PARENT_RUN_ID | --experiment NAME] [--out DIR]
    python scripts/report.py --from-table epochs.csv [--out DIR]   # no store: a tidy table

By default the most recent sweep of the embedded store, written to reports/<sweep-name>/ and
logged back to MLflow as a run tagged kind=report. Exit code 2, with one line: a store it
cannot use (unreachable, corrupt, full), no store, or no runs.
"""
# ruff: noqa: E402  (the imports after procs.quiet_while_loading take seconds)

from emergence_lab import procs

procs.quiet_while_loading("report")  # Ctrl-C in the seconds the imports below take: one line

import argparse
import os
import sys

from emergence_lab.errors import one_line
from emergence_lab.measure.setting import Setting
from emergence_lab.registry import load_plugins
from emergence_lab.report.assemble import ReportError
from emergence_lab.report.build import ENDING_FILE, build_report, build_report_from_table


def parse_setting(text: str) -> Setting:
    """RULE:THETA:COUNTING (COUNTING optional: units) as a setting."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError("expected RULE:THETA[:COUNTING], e.g. dormant:0.1:edges")
    try:
        theta = float(parts[1])
    except ValueError:
        raise ValueError(f"THETA must be a number, got {parts[1]!r}") from None
    return Setting(parts[0], theta, parts[2] if len(parts) == 3 else "units")


def main() -> int:
    load_plugins()  # a plugin's activity rule reads the stored measurements too
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--sweep", help="parent run id of a sweep (default: the latest sweep)")
    which.add_argument("--experiment", help="every training run of this MLflow experiment")
    which.add_argument("--from-table", metavar="FILE.csv",
                       help="a tidy table (one row per run and epoch, as a report's epochs.csv): "
                            "the whole report from it, no MLflow store")
    ap.add_argument("--out", help="output folder (default: reports/<sweep-name>/)")
    ap.add_argument("--no-log", action="store_true", help="do not log the report back to MLflow")
    ap.add_argument("--stop-epsilon", type=float, default=0.0,
                    help="the stopper fires once E <= this ... (default 0)")
    ap.add_argument("--stop-patience", type=int, default=3, help="... for this many epochs")
    ap.add_argument("--setting", metavar="RULE:THETA:COUNTING",
                    help="read E in this analysis setting, e.g. dormant:0.1:edges (default: the "
                         "paper's, mean:0.05:units); the runs must have stored it")
    ap.add_argument("--include-collapsed", action="store_true",
                    help="count runs whose network collapsed (tag collapsed: units dead, accuracy "
                         "at or below chance); by default they are listed apart")
    ap.add_argument("--ui-url", help="the MLflow UI's address for links to run pages (default: "
                                     "the server of an http URI, else http://127.0.0.1:5000)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print the whole report (default: the sweep, its verdicts and where to "
                         "look next, on one screen)")
    args = ap.parse_args()
    try:
        setting = parse_setting(args.setting) if args.setting else None
    except ValueError as exc:
        print(f"report: --setting {args.setting}: {exc}", file=sys.stderr)
        return 2
    procs.loaded()  # from here: KeyboardInterrupt
    try:
        if args.from_table:
            out = build_report_from_table(args.from_table, args.out,
                                          (args.stop_epsilon, args.stop_patience), setting)
        else:
            out = build_report(args.tracking_uri, args.sweep, args.experiment, args.out,
                               log_back=not args.no_log,
                               stop_rule=(args.stop_epsilon, args.stop_patience), ui=args.ui_url,
                               setting=setting, include_collapsed=args.include_collapsed)
    except ReportError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"report: interrupted; the previous report{' in ' + args.out if args.out else ''} "
              "is as it was (the new one is written aside, then moved in)", file=sys.stderr)
        return 130
    except Exception as exc:  # a store that breaks mid-way, a full disk: one line, not SQL
        if os.environ.get("EMERGENCE_LAB_TRACEBACK"):
            raise
        print(f"report: {one_line(exc, args.tracking_uri)} (EMERGENCE_LAB_TRACEBACK=1 shows where)",
              file=sys.stderr)
        return 2
    ending = out / ENDING_FILE
    if args.verbose or not ending.is_file():
        print((out / "report.md").read_text())
        print(f"report written to {out}/report.md, report.html, summary.csv, claims.csv, epochs.csv")
    else:
        print(ending.read_text(), end="")
    return 0


if __name__ == "__main__":
    procs.run_and_exit(main)
