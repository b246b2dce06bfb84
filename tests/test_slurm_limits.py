"""SLURM's limits through hydra/launcher=slurm on a real one-node cluster (scripts/slurm.sh):
a signal to the submitter cancels every job and exits 143 with one line; a job past its wall
time ends KILLED and is resumed; without accounting a job that vanishes fails its cell within
a bound; a job killed before its run exists leaves a FAILED run of its cell. Skipped, saying
why, where SLURM cannot be installed."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.slurm_cluster import (
    _env,
    cells,
    events,
    finish,
    resumed_epoch,
    runs,
    slurm,
    sweep,
    wait_epochs,
)

pytestmark = pytest.mark.slow


def test_a_signal_to_the_submitter_cancels_every_job_and_exits_143(cluster, tmp_path):
    proc = sweep(cluster, tmp_path, "s", "pruning=magnitude", "pruning.amount=0,0.3,0.5",
                 "pruning.epoch=1", "trainer.epochs=400")
    seen = wait_epochs(tmp_path, "s", jobs=1, epochs=2)  # one or two running, one pending
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, timeout=60)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 143 and "Traceback" not in err, err[-3000:]
    assert lines[-1].startswith("Sweep interrupted (SIGTERM)") and "Resume with:" in lines[-1]
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert not [r for r in runs(uri) if r.info.status == "RUNNING"]
    started = {e["run_id"] for ev in events(tmp_path, "s").values() for e in ev if e["kind"] == "run"}
    assert {r.info.run_id: r.info.status for r in cells(uri)} == dict.fromkeys(started, "KILLED")
    assert len(started) < 3 and len(seen) >= 1  # the pending cell never started
    deadline = time.monotonic() + 30  # scancel'd: gone from the queue (past KillWait at most)
    while slurm(cluster, "squeue", "-h") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert slurm(cluster, "squeue", "-h") == ""


def test_a_job_past_its_wall_time_ends_killed_and_is_resumed(cluster, tmp_path):
    # two minutes of wall time, SLURM's warning (SIGUSR2) 40 s before it: SLURM sends it up to
    # 60 s early (its next check, every 30 s, once end - 40 s - 30 s is past), so 20 to 50 s
    # in: after the first epoch's checkpoint even under load, long before the epochs end
    # (one minute and 45 s: at its first check after the start, 0 to 30 s in, at times
    # before the job's run existed)
    grid = ("pruning=magnitude", "pruning.amount=0.5", "pruning.epoch=1", "trainer.epochs=2000",
            "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=40")
    code, out, err = finish(sweep(cluster, tmp_path, "s", *grid), timeout=200)
    assert code == 1 and "Traceback" not in err, err[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (run,) = cells(uri)
    assert run.info.status == "KILLED" and "wall time" in run.data.tags["error"]
    assert resumed_epoch(cluster, tmp_path, grid, run.info.run_id) > 1  # from its checkpoint
    assert [r.info.run_id for r in cells(uri)] == [run.info.run_id]  # the same run, resumed


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


def test_a_job_killed_before_its_run_exists_leaves_a_failed_run_of_its_cell(cluster, tmp_path):
    """The job's Python is killed (as the OOM killer would) while it has no run of its own: it
    waits for the cell's run, which another live process (this test) holds. With accounting the
    scheduler says FAILED, and the submitter records a FAILED run of the cell, from the cell its
    job's start event named; the held run is left to its owner."""
    from emergence_lab.run.plan import make_plan
    from emergence_lab.store import cells as store_cells
    from tests.conftest import compose_cfg

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    overrides = ["dataset=digits", "model.hidden=[32,16]", "trainer.batch_size=8",
                 "trainer.device=cpu", "trainer.epochs=2", f"tracking.uri={uri}"]
    plan = make_plan(compose_cfg(overrides), None, overrides)
    held = store_cells.acquire(plan.cell(plan.tags()))
    proc = sweep(cluster, tmp_path, "s", "trainer.epochs=2")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            e["kind"] == "note" and "being trained by" in e["text"]
            for ev in events(tmp_path, "s").values() for e in ev):
        time.sleep(0.3)
    pids = subprocess.run(["pgrep", "-f", f"submitit.core._submit {tmp_path}"],
                          capture_output=True, text=True).stdout.split()
    assert pids, events(tmp_path, "s")
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    code, out, err = finish(proc, timeout=120)
    assert code == 1 and "Traceback" not in err and "Redo with:" in err, err[-3000:]
    failed = [r for r in cells(uri) if r.info.run_id != held.run_id]
    assert [r.info.status for r in failed] == ["FAILED"], err[-3000:]
    assert failed[0].data.tags["error"].startswith("failed before its run existed: SLURM job")
    assert failed[0].data.tags["config_hash"] == plan.identity
    assert [r.info.status for r in cells(uri) if r.info.run_id == held.run_id] == ["RUNNING"]
