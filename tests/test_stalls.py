"""A job that stops making progress (a stopped or hung worker: SIGSTOP here) is noticed: its
launcher says so on the status line, then ends it KILLED (resumable) at its
tracking.stall_after_s; a second sweep waiting on its cell stops waiting at its own
stall_after_s and takes the run over from its checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from emergence_lab.store import ledger, records
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SWEEP = ["-m", "dataset=digits", "model.hidden=[16,8]", "trainer.batch_size=32",
         "trainer.epochs=40", "tracking.progress=false", "hydra.launcher.n_jobs=1"]


def launch(uri: str, cwd, *more: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *SWEEP,
                             f"tracking.uri={uri}", *more], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_a_stalled_job_is_said_then_killed_and_a_waiting_sweep_takes_it_over(tmp_path, store):
    first = launch(store, tmp_path, "hydra.sweep.dir=a", "tracking.stall_after_s=20")
    deadline, run = time.monotonic() + 120, None
    while time.monotonic() < deadline:  # its run has finished an epoch
        runs = records.experiment_runs(store, "emergence") if (tmp_path / "mlruns").exists() else []
        run = next((r for r in runs if ledger.PROGRESS_TAG in r.data.tags), None)
        if run is not None:
            break
        time.sleep(0.2)
    assert run is not None, first.stdout.read() if first.poll() is not None else "no progress"
    worker = ledger.local_pid(ledger.lease_holder(run)[1])
    os.kill(worker, signal.SIGSTOP)  # hung: alive, heartbeat and all, but no epoch ends
    stopped_at = time.monotonic()
    # the second takes the run over at its own limit, well before the first's (its own epochs,
    # under the load of a parallel suite, take well under it)
    second = launch(store, tmp_path, "hydra.sweep.dir=b", "tracking.stall_after_s=10")
    out2, _ = second.communicate(timeout=180)
    out1, _ = first.communicate(timeout=180)
    assert second.returncode == 0, out2[-3000:]
    assert "stalled" in out2  # it said why it took the run over
    assert "has finished no epoch" in out1 and "stalled: no epoch for 20 s" in out1, out1[-3000:]
    assert time.monotonic() - stopped_at < 120
    cells = [r for r in records.experiment_runs(store, "emergence") if "config_hash" in r.data.tags]
    assert [(r.info.run_id, r.info.status) for r in cells] == [(run.info.run_id, "FINISHED")]
    assert "Traceback" not in out1 + out2
