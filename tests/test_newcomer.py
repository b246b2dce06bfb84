"""What a new user sees: the sweep's status line (with and without a terminal), per-epoch lines
in the job logs rather than the terminal, an ending that fits on one screen, one report per
sweep."""

import io
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from emergence_lab.report.build import ENDING_FILE, build_report
from emergence_lab.report.synthetic import big_sweep
from emergence_lab.store import artifacts, connection
from emergence_lab.sweep.display import StatusDisplay
from emergence_lab.sweep.status import Job, SweepStatus
from tests.conftest import ROOT


def status_of(states):
    jobs = [Job([f"trainer.seed={i}"], epochs=10) for i in range(len(states))]
    for job, state in zip(jobs, states, strict=True):
        job.state = state
    return SweepStatus(jobs)


def test_the_status_line_counts_cells_and_epochs_and_estimates_what_is_left():
    status = status_of(["skipped", "finished", "running", "waiting", "waiting"])
    status.update(2, {"kind": "start", "name": "c2", "epochs": 10})
    for epoch in range(1, 5):
        status.update(2, {"kind": "epoch", "epoch": epoch, "loaded": epoch <= 2})
    assert status.jobs[2].loaded == 2 and status.jobs[2].trained == 2
    status.first_epoch_at = time.monotonic() - 20  # 2 epochs trained in 20 s: 10 s an epoch
    line = status.line()
    assert line.startswith("cells 2 finished (1 already), 1 running, 2 waiting of 5 | "
                           "epochs 2 trained, 2 loaded | ")
    # left: 6 epochs of the running cell and 10 of each waiting one, at 0.1 epoch/s
    assert status.eta_s() == pytest.approx(260, rel=0.02)
    assert "~4m" in line
    status.update(4, {"kind": "end", "status": "failed", "error": "boom"})
    assert "1 failed" in status.line()
    # a finished cell that loaded 5 epochs from the shared state: the waiting one will too
    status.jobs[1].loaded = 5
    assert status.eta_s() == pytest.approx((6 + 5) * 10, rel=0.02)


def test_the_display_redraws_in_place_on_a_terminal_and_prints_rare_lines_elsewhere():
    status = status_of(["running", "waiting"])
    tty, plain = io.StringIO(), io.StringIO()
    on_tty, off_tty = StatusDisplay(status, tty, tty=True), StatusDisplay(status, plain, tty=False)
    for _ in range(5):
        on_tty.refresh()
        off_tty.refresh()
    on_tty.message("cell c failed: boom")
    off_tty.message("cell c failed: boom")
    on_tty.close()
    off_tty.close()
    assert tty.getvalue().startswith("\r\x1b[Kcells 0 finished") and "\n" in tty.getvalue()
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue()
    assert lines == [f"[sweep] {status.line()}", "cell c failed: boom", f"[sweep] {status.line()}"]


def read_all(fd, proc, timeout=300):
    out, deadline = b"", time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out.decode(errors="replace")


@pytest.mark.slow
def test_a_sweep_in_a_terminal_shows_one_status_line_and_keeps_epochs_in_the_job_logs(tmp_path):
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "dataset=digits",
         "model.hidden=[16,8]", "trainer.epochs=3", "pruning=magnitude", "pruning.epoch=1",
         "pruning.amount=0,0.3,0.5", "tracking.uri=sqlite:///x.db"],
        cwd=tmp_path, stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    out = read_all(primary, proc)
    assert proc.wait(60) == 0, out[-3000:]
    os.close(primary)
    assert "sweep of 3 jobs" in out  # counted right, from the command line's grid
    redraws = re.findall(r"\r\x1b\[K(cells [^\r\n]*)", out)
    assert redraws and redraws[-1].startswith("cells 3 finished, 0 running, 0 waiting of 3")
    assert "epochs 7 trained, 2 loaded" in redraws[-1]  # 3 + 2 + 2: two branches load epoch 1
    assert "epoch 2: train/loss" not in out  # per-epoch lines are in the job logs
    logs = sorted(tmp_path.glob("outputs/multirun/*/*/train.log"))
    assert len(logs) == 3 and all("epoch 3: train/loss" in p.read_text() for p in logs)


def test_the_ending_fits_on_a_screen_and_a_sweep_has_one_report_run(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 's.db'}"
    parent = big_sweep(uri, seeds=10, epochs=8)  # 40 runs
    for _ in range(2):
        out = build_report(uri, sweep=parent, out=str(tmp_path / "r"))
    ending = (out / ENDING_FILE).read_text().splitlines()
    assert len(ending) <= 30, "\n".join(ending)
    text = "\n".join(ending)
    assert ending[0].startswith("Sweep ") and "claim" in text and "verdict" in text
    assert f"Report: {out}/report.html" in text and "Browse: make ui, then http://" in text
    assert parent in text
    client = connection.get_client(uri)
    exp = client.get_run(parent).info.experiment_id
    reports = [r for r in client.search_runs([exp]) if r.data.tags.get("kind") == "report"]
    assert len(reports) == 1 and reports[0].data.tags["report_version"] == "2"
    assert artifacts.artifact_names(uri, reports[0].info.run_id, "history/v1") == \
        artifacts.artifact_names(uri, reports[0].info.run_id, "history/v2") == [
            "claims.csv", "report.md", "summary.csv"]
    # the sweep's own page: each headline verdict as a tag and its effect as a metric
    import pandas as pd

    from emergence_lab.report import verdicts

    p = client.get_run(parent).data
    claims = verdicts.headline(pd.read_csv(out / "claims.csv"))
    shown = {k for k in p.tags if k.startswith("verdict/")}
    assert len(shown) == len(claims) > 3
    assert {k.split("/")[1] for k in shown} == set(claims.claim)
    effects = {k: v for k, v in p.metrics.items() if k.startswith("claim/")}
    assert sorted(effects.values()) == pytest.approx(sorted(claims["mean"].dropna()), rel=1e-6)
    for key, value in effects.items():  # each effect beside its verdict
        rows = claims[((claims["mean"] - value).abs() < 1e-9 * max(1, abs(value)))
                      & (claims.claim == key.split("/")[1])]
        assert p.tags["verdict/" + key[len("claim/"):]].startswith(tuple(rows.verdict))
