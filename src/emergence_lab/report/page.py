"""The report's HTML page (images embedded) and the report's files: report.md, report.html,
the CSVs and the figures."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from emergence_lab.report import verdicts
from emergence_lab.report.assemble import Report
from emergence_lab.report.sections import NOTES, markdown, sections, slug


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
    if rep.e_summaries is not None:
        rep.e_summaries.to_csv(out / "E_summaries.csv", index=False)
    rep.stopping.to_csv(out / "stopping.csv", index=False)
    for name, table in (("lr.csv", rep.lr), ("calibration.csv", rep.calibration)):
        if not table.empty:
            table.to_csv(out / name, index=False)
    (out / "report.md").write_text(markdown(rep))
    (out / "report.html").write_text(html_page(rep, out))
