"""A report over 2,000 runs: it finishes without error, its metric fetches staying within the
store's connection pool (16 threads against MLflow's 15 pooled connections once failed with
`QueuePool limit ... reached` after 40-54 s), in a time stated in docs/performance.md (make
bench prints it: seconds per 1,000 runs). About a minute: the histories come from the store in
one query per metric and 500 runs, and the report splits them by run once."""

from __future__ import annotations

import time

import pytest

from emergence_lab.report.build import build_report
from emergence_lab.report.synthetic import big_sweep, replicate

pytestmark = pytest.mark.slow

RUNS = 2000


def test_a_report_over_two_thousand_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'big.db'}"
    parent = big_sweep(uri, seeds=5, epochs=8)  # 20 runs written by MLflow's client
    assert replicate(uri, parent, RUNS // 20 - 1) == RUNS  # ... copied to 2,000 in the store
    start = time.monotonic()
    out = build_report(uri, sweep=parent, out=str(tmp_path / "report"), log_back=False)
    took = time.monotonic() - start
    text = (out / "report.md").read_text()
    assert "QueuePool" not in text and f"{RUNS} FINISHED runs" in text, text[:300]
    print(f"report over {RUNS} runs: {took:.1f} s ({took / RUNS * 1000:.1f} s per 1,000 runs)")
