"""Sweeps on a real single-node SLURM cluster (scripts/slurm.sh: slurmctld, slurmd, slurmdbd
with MariaDB, munge), through hydra/launcher=slurm: the local launcher's contract kept when
the scheduler cancels a job, a job runs out of time, the submitter is signalled, accounting is
off, or the request cannot be met; and a sweep whose jobs log to a server that asks for a login.

The cluster is stood up once for this file (a few seconds; Debian's packages installed on first
use); where they cannot be installed (no root, no apt), these tests are skipped and say why."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from emergence_lab.store import connection
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "slurm.sh"


def _free_block(n: int = 4) -> int:
    """A first port of n consecutive ports on loopback that nothing listens on."""
    for _ in range(50):
        base = random.randrange(20000, 40000)
        with socket.socket() as s:
            if all(s.connect_ex(("127.0.0.1", base + i)) != 0 for i in range(n)):
                return base
    raise RuntimeError("no free block of ports")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Path:
    """A SLURM cluster of this machine for this file's tests; its slurm.conf."""
    folder = Path("/tmp") / f"emergence-lab-slurm-{os.getpid()}"
    result = subprocess.run([str(SCRIPT), "start", str(folder), str(_free_block())],
                            capture_output=True, text=True, timeout=900)
    if result.returncode == 3:  # the packages cannot be installed here
        pytest.skip(f"no SLURM cluster: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    yield folder / "slurm.conf"
    subprocess.run([str(SCRIPT), "stop", str(folder)], timeout=120)
    subprocess.run(["rm", "-rf", str(folder)])


def _env(conf: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": str(conf), **extra}


def sweep(conf: Path, tmp: Path, name: str, *overrides: str, env: dict | None = None,
          uri: str | None = None) -> subprocess.Popen:
    """A sweep on the cluster (its submitter, started)."""
    uri = uri or f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    cmd = [sys.executable, "scripts/train.py", "-m", "hydra/launcher=slurm",
           "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.poll_s=0.5",
           "dataset=digits", "model.hidden=[32,16]", "trainer.batch_size=32",
           "trainer.device=cpu", "tracking.progress=false", f"tracking.uri={uri}",
           f"tracking.cache_dir={tmp / 'cache'}", f"hydra.sweep.dir={tmp / name}", *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, env=env or _env(conf), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def slurm(conf: Path, *args: str) -> str:
    return subprocess.run(args, env=_env(conf), capture_output=True, text=True, timeout=30,
                          check=True).stdout


def events(tmp: Path, name: str) -> dict[str, list[dict]]:
    """job id -> the events its job wrote."""
    return {p.name.split("_events")[0]: [json.loads(x) for x in p.read_text().splitlines() if x]
            for p in (tmp / name / ".submitit").glob("*/*_events.jsonl")}


def wait_epochs(tmp: Path, name: str, jobs: int, epochs: int, timeout: float = 120) -> dict:
    """Wait until `jobs` jobs have each trained `epochs` epochs; their events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = events(tmp, name)
        if sum(sum(e["kind"] == "epoch" for e in ev) >= epochs for ev in seen.values()) >= jobs:
            return seen
        time.sleep(0.3)
    raise AssertionError(f"{jobs} jobs did not train {epochs} epochs in {timeout} s: {seen}")


def runs(uri: str, **auth: str) -> list:
    client = connection.get_client(uri)
    exp = client.get_experiment_by_name("emergence")
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def cells(uri: str) -> list:
    return [r for r in runs(uri) if "config_hash" in r.data.tags]


def test_a_cancelled_job_interrupts_its_own_cell_and_the_rerun_resumes_it(cluster, tmp_path):
    grid = ("pruning=magnitude", "pruning.amount=0,0.5", "pruning.epoch=1", "trainer.epochs=40")
    proc = sweep(cluster, tmp_path, "s", *grid)
    seen = wait_epochs(tmp_path, "s", jobs=2, epochs=3)
    victim = sorted(seen)[0]
    slurm(cluster, "scancel", victim)
    code, out, err = finish(proc)
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert "1 of 2 cells did not finish" in err and "(KILLED)" in err and "Redo with:" in err
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    killed = {e["run_id"] for e in seen[victim] if e["kind"] == "run"}
    status = {r.info.run_id: r.info.status for r in cells(uri)}
    assert sorted(status.values()) == ["FINISHED", "KILLED"] and status[killed.pop()] == "KILLED"
    code, out, err = finish(sweep(cluster, tmp_path, "s", *grid))
    assert code == 0, err[-3000:]
    assert {r.info.status for r in cells(uri)} == {"FINISHED"} and len(cells(uri)) == 2
    resumed = [ev for job, ev in events(tmp_path, "s").items() if job not in seen
               and any(e["kind"] == "run" and e["run_id"] in status for e in ev)]
    first_epochs = [next(e["epoch"] for e in ev if e["kind"] == "epoch") for ev in resumed
                    if any(e["kind"] == "epoch" for e in ev)]
    assert first_epochs and min(first_epochs) > 1, first_epochs  # from its checkpoint


def test_a_signal_to_the_submitter_cancels_every_job_and_exits_143(cluster, tmp_path):
    proc = sweep(cluster, tmp_path, "s", "pruning=magnitude", "pruning.amount=0,0.3,0.5",
                 "pruning.epoch=1", "trainer.epochs=60")
    wait_epochs(tmp_path, "s", jobs=2, epochs=2)  # two running, the third pending
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, timeout=60)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 143 and "Traceback" not in err, err[-3000:]
    assert lines[-1].startswith("Sweep interrupted (SIGTERM)") and "Resume with:" in lines[-1]
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert not [r for r in runs(uri) if r.info.status == "RUNNING"]
    assert sorted(r.info.status for r in cells(uri)) == ["KILLED", "KILLED"]
    deadline = time.monotonic() + 30  # scancel'd: gone from the queue (past KillWait at most)
    while slurm(cluster, "squeue", "-h") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert slurm(cluster, "squeue", "-h") == ""


def test_a_job_past_its_wall_time_ends_killed_and_is_resumed(cluster, tmp_path):
    # one minute of wall time, SLURM's warning (SIGUSR2) 55 s before it: the controller sends
    # it at its next check (every 30 s), long before the 2,000 epochs end
    grid = ("pruning=magnitude", "pruning.amount=0.5", "pruning.epoch=1", "trainer.epochs=2000",
            "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=55")
    code, out, err = finish(sweep(cluster, tmp_path, "s", *grid), timeout=150)
    assert code == 1 and "Traceback" not in err, err[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (run,) = cells(uri)
    assert run.info.status == "KILLED" and "wall time" in run.data.tags["error"]
    before = set(events(tmp_path, "s"))
    proc = sweep(cluster, tmp_path, "s", *grid)  # the rerun resumes it from its checkpoint
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        new = [ev for job, ev in events(tmp_path, "s").items() if job not in before]
        started = [e["epoch"] for ev in new for e in ev if e["kind"] == "epoch"]
        if started:
            break
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    finish(proc, timeout=60)
    assert started and started[0] > 1, started
    assert [r.info.run_id for r in cells(uri)] == [run.info.run_id]  # the same run, resumed


def test_a_request_no_node_can_meet_is_refused_before_any_run(cluster, tmp_path):
    code, out, err = finish(sweep(cluster, tmp_path, "s", "trainer.epochs=1",
                                  "hydra.launcher.mem_gb=100000"), timeout=120)
    assert code == 2 and "Traceback" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("Sweep not started")]
    assert "SLURM refuses the sweep's jobs" in line and "node configuration" in line
    assert "mem_gb=100000" in line and "cpus=" in line  # what was asked, what is offered
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_without_accounting_a_vanished_job_fails_its_cell_within_a_bound(cluster, tmp_path):
    # a client whose slurm.conf has no accounting: sacct says "accounting storage is disabled"
    noacct = tmp_path / "slurm.conf"
    noacct.write_text(cluster.read_text().replace("accounting_storage/slurmdbd",
                                                  "accounting_storage/none"))
    proc = sweep(cluster, tmp_path, "s", "trainer.epochs=400", "hydra.launcher.vanished_after_s=4",
                 env=_env(noacct))
    seen = wait_epochs(tmp_path, "s", jobs=1, epochs=2)
    assert len(seen) == 1
    # the job's Python killed as the OOM killer would: no result, no run closed by the job
    pids = subprocess.run(["pgrep", "-f", f"submitit.core._submit {tmp_path}"],
                          capture_output=True, text=True).stdout.split()
    assert pids
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    start = time.monotonic()
    code, out, err = finish(proc, timeout=60)
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert time.monotonic() - start < 30
    assert "vanished" in err and "no accounting" in err, err[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (run,) = cells(uri)
    assert run.info.status == "FAILED" and "vanished" in run.data.tags["error"]


def _get(url: str, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:  # not listening yet
        return 0


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
    while _get(f"{uri}/health") != 200:
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
    assert _get(create, json.dumps({"name": "intruder"}).encode()) == 401
    grid = ("pruning=magnitude", "pruning.amount=0,0.5", "pruning.epoch=1", "trainer.epochs=3")
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
    assert sorted(r.info.status for r in done) == ["FINISHED", "FINISHED"]
    assert len({r.data.tags["config_hash"] for r in done}) == 2
    jobs_before = slurm(cluster, "squeue", "-h", "-t", "all")
    code, out, err = finish(sweep(cluster, tmp_path, "c", *grid, uri=uri, env=env))
    assert code == 0 and "2 of 2 cells already finished" in out, out + err
    assert slurm(cluster, "squeue", "-h", "-t", "all") == jobs_before  # nothing submitted
