"""The report's HTML page (images embedded) and the report's files: report.md, report.html,
the CSVs and the figures."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from emergence_lab.report import safe, verdicts
from emergence_lab.report.assemble import Report
from emergence_lab.report.sections import NOTES, markdown, sections, slug


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}" style="max-width:100%">'


def _html_table(body: pd.DataFrame) -> str:
    """Every value escaped (a run renamed to a script stays text); run pages as links."""
    if body.empty:
        return "<p>(none)</p>"
    return safe.html_table(body, {"run page": "open"})


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
        f"<li>{html.escape(c.name)}: {html.escape(c.statement)}</li>" for c in verdicts.CLAIMS)
        + "</ul>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "font-size:12px}td,th{padding:3px 6px;border-bottom:1px solid #ddd}"
             "summary{font-weight:bold;margin:1em 0;cursor:pointer}")
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head>" \
           f"<body>{''.join(parts)}</body></html>"


def write(rep: Report, out: Path) -> list[Path]:
    """report.md, report.html, the CSV tables and the PNGs into out; returns the files it wrote
    (what the report uploads: nothing else in `out`)."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for group, figs in rep.figures.items():
        for stem, fig in figs.items():
            written.append(out / f"{slug(group)}__{stem}.png")
            fig.savefig(written[-1], dpi=110)
            plt.close(fig)
    tables = {"summary.csv": rep.summary, "claims.csv": rep.tests, "epochs.csv": rep.epochs,
              "runs.csv": rep.per_run, "thetas.csv": rep.thetas,
              "theta_verdicts.csv": rep.sensitivity, "sparsity.csv": rep.sparsity,
              "relative_E.csv": rep.rel_explained, "E_summaries.csv": rep.e_summaries,
              "stopping.csv": rep.stopping}
    # the analyses that apply to some sweeps only: a file where they have rows
    tables |= {n: t for n, t in (("lr.csv", rep.lr), ("calibration.csv", rep.calibration))
               if not t.empty}
    for name, table in tables.items():
        if table is not None:
            written.append(out / name)
            safe.write_csv(table, written[-1])
    written += [out / "report.md", out / "report.html"]
    written[-2].write_text(markdown(rep))
    written[-1].write_text(html_page(rep, out))
    return written
