"""The end of `make sweep` on one screen: the sweep, its last launch, the verdicts and where to
look next. The whole report stays in its files (`scripts/report.py -v` prints it)."""

from __future__ import annotations

from emergence_lab.report import verdicts
from emergence_lab.report.assemble import Report
from emergence_lab.report.sections import one_sentence
from emergence_lab.report.views import verdict_table

MEANING_CHARS = 62  # the claim's meaning in one line; the report holds its caveat too


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1].rstrip() + "…"


def launch_line(launch: dict) -> str:
    """'20 cells: 16 trained in this launch, 4 already finished, 0 did not finish; the launch
    took 11m05s', from the parent's last_launch tag (sweep/callback.py writes it)."""
    return (f"{launch['cells']} cells: {launch['trained']} trained in this launch, "
            f"{launch['skipped']} already finished, {launch['failed']} did not finish; "
            f"the launch took {launch['took']}")


def verdict_lines(rep: Report) -> str:
    """The report's verdict table (views.verdict_table) in plain text, cut to what a terminal
    shows: claim, pruned, verdict, effect, the claim's meaning in one line."""
    table = verdict_table(verdicts.headline(rep.tests), len(rep.figures) > 1, explain=True)
    if table.empty:
        return "(no verdicts: see the report's Completeness section)"
    keep = [c for c in ("group", "claim", "pruned", "verdict", "effect [95 % CI]", "meaning")
            if c in table]
    table = table[keep].assign(verdict=table.verdict.map(lambda v: _short(v, 40)),
                               meaning=table.meaning.map(lambda v: _short(v, MEANING_CHARS)))
    return table.to_markdown(index=False, tablefmt="simple")


CLAIMS_DOC = "docs/methodology/claims.md"  # the page that explains each verdict


def ending(rep: Report, out_dir: str, launch: dict | None, sweep_url: str | None) -> str:
    """What a finished sweep prints: about 20 lines whatever its size."""
    lines = [f"Sweep {rep.name}", *([f"  {launch_line(launch)}"] if launch else []),
             f"  {one_sentence(rep).split(': ', 1)[-1]}", "",
             f"Verdicts (E read in the setting {rep.setting}; effects: mean [95 % CI] over seeds):",
             verdict_lines(rep), ""]
    gaps = [f"{len(v)} {k.replace('_', ' ')}" for k, v in rep.gaps.items()
            if v and k in ("missing_jobs", "failed_runs", "collapsed", "duplicates")]
    if rep.gaps.get("code_versions"):
        lines.append(f"Warning: the runs come from {len(rep.gaps['code_versions'])} code versions "
                     f"(the report's Completeness section)")
    if gaps:
        lines.append(f"Not counted: {', '.join(gaps)} (the report's Completeness section)")
    lines += [f"Report: {out_dir}/report.html (report.md, claims.csv, summary.csv, epochs.csv; "
              f"scripts/report.py -v prints all of it)",
              f"What each verdict measures and reads: {CLAIMS_DOC} (make docs)"]
    if sweep_url:
        lines.append(f"Browse: make ui, then {sweep_url}")
    return "\n".join(lines)
