"""Sweeps on a real single-node SLURM cluster (scripts/slurm.sh: slurmctld, slurmd, slurmdbd
with MariaDB, munge) through hydra/launcher=slurm: jobs logging to a server that asks for a
login (the same sweep submitted twice: one run per cell; a third time: nothing submitted), a
cancelled job (its own cell interrupted, the rerun resumes it), a request no node can meet, a
submitter killed with -9. Limits (signals, wall time, no accounting): test_slurm_limits.py.

The cluster is stood up once per file (a few seconds; Debian's packages installed on first
use); where they cannot be installed (no root, no apt), these tests are skipped and say why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.slurm_cluster import (
    _env,
    cells,
    finish,
    http_status,
    resumed_epoch,
    slurm,
    sweep,
    wait_epochs,
)

pytestmark = pytest.mark.slow


def test_a_cancelled_job_interrupts_its_own_cell_and_the_rerun_resumes_it(cluster, tmp_path):
    grid = ("pruning=magnitude", "pruning.amount=0,0.5", "pruning.epoch=1", "trainer.epochs=60")
    proc = sweep(cluster, tmp_path, "s", *grid)
    seen = wait_epochs(tmp_path, "s", jobs=1, epochs=2)
    victim = next(job for job, ev in seen.items()
                  if sum(e["kind"] == "epoch" for e in ev) >= 2)
    slurm(cluster, "scancel", victim)
    code, out, err = finish(proc)
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert "1 of 2 cells did not finish" in err and "(KILLED)" in err and "Redo with:" in err
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    killed = {e["run_id"] for e in seen[victim] if e["kind"] == "run"}.pop()
    status = {r.info.run_id: r.info.status for r in cells(uri)}
    assert sorted(status.values()) == ["FINISHED", "KILLED"] and status[killed] == "KILLED"
    assert resumed_epoch(cluster, tmp_path, grid, killed) > 1  # from its checkpoint


def test_a_request_no_node_can_meet_is_refused_before_any_run(cluster, tmp_path):
    code, out, err = finish(sweep(cluster, tmp_path, "s", "trainer.epochs=1",
                                  "hydra.launcher.mem_gb=100000"), timeout=120)
    assert code == 2 and "Traceback" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("Sweep not started")]
    assert "SLURM refuses the sweep's jobs" in line and "node configuration" in line
    assert "mem_gb=100000" in line and "cpus=" in line  # what was asked, what is offered
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
    # a wall-time warning that SLURM may send as the job starts (up to 60 s early)
    code, out, err = finish(sweep(cluster, tmp_path, "s", "trainer.epochs=1",
                                  "hydra.launcher.timeout_min=1",
                                  "hydra.launcher.signal_delay_s=45"), timeout=120)
    assert code == 2 and "Traceback" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("Sweep not started")]
    assert "signal_delay_s=45 with hydra.launcher.timeout_min=1" in line and "60 s" in line
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_jobs_outlive_a_submitter_killed_with_sigkill(cluster, tmp_path):
    # SLURM's jobs do not watch their submitter (the local launcher's do): a lost login
    # session or `kill -9` leaves them to finish their runs
    proc = sweep(cluster, tmp_path, "s", "trainer.epochs=15")
    seen = wait_epochs(tmp_path, "s", jobs=1, epochs=1)
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 90
    while slurm(cluster, "squeue", "-h", "-j", sorted(seen)[0]).strip() and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (run,) = cells(uri)
    assert run.info.status == "FINISHED", run.data.tags.get("error")


@pytest.fixture
def login_server(tmp_path):
    """make server's authenticated MLflow (scripts/server.py --auth on, SQLite behind it for
    speed; PostgreSQL is tests/test_server.py's): its URI and the admin's login."""
    port, secret = free_port(), tmp_path / "auth" / "admin.password"
    server = subprocess.Popen(
        [sys.executable, "scripts/server.py", "--port", str(port), "--auth", "on",
         "--auth-dir", str(tmp_path / "auth"), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
         "--artifacts-destination", str(tmp_path / "art")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while http_status(f"{uri}/health") != 200:
        assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
        time.sleep(0.5)
    yield uri, {"MLFLOW_TRACKING_USERNAME": "admin",
                "MLFLOW_TRACKING_PASSWORD": secret.read_text()}
    server.terminate()
    server.wait(30)
    cmdline = " ".join(Path(f"/proc/{server.pid}/cmdline").read_text().split("\0")) \
        if Path(f"/proc/{server.pid}").exists() else ""
    assert secret.read_text() not in cmdline and oct(secret.stat().st_mode & 0o777) == "0o600"


def test_a_sweep_of_jobs_logging_to_a_server_with_a_login(cluster, login_server, tmp_path):
    """The sweep's jobs log to make server's authenticated MLflow; the same sweep submitted
    twice at once makes one run per cell, and a third time submits nothing."""
    uri, login = login_server
    create = f"{uri}/api/2.0/mlflow/experiments/create"
    assert http_status(create, json.dumps({"name": "intruder"}).encode()) == 401
    grid = ("trainer.epochs=2",)
    code, out, err = finish(sweep(cluster, tmp_path, "x", *grid, uri=uri))  # no login
    assert code == 2 and "lets in only who logs in" in err and "Traceback" not in err, err
    env = _env(cluster, **login)
    first, second = (sweep(cluster, tmp_path, name, *grid, uri=uri, env=env) for name in "ab")
    for proc in (first, second):
        code, out, err = finish(proc)
        assert code == 0 and "Traceback" not in err, err[-3000:]
    os.environ.update(login)
    try:
        done = cells(uri)
    finally:
        for key in login:
            os.environ.pop(key)
    assert [r.info.status for r in done] == ["FINISHED"]  # one run of the one cell
    jobs_before = slurm(cluster, "squeue", "-h", "-t", "all")
    code, out, err = finish(sweep(cluster, tmp_path, "c", *grid, uri=uri, env=env))
    assert code == 0 and "1 of 1 cells already finished" in out, out + err
    assert slurm(cluster, "squeue", "-h", "-t", "all") == jobs_before  # nothing submitted
