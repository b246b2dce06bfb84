"""Hostile use of a running sweep: Ctrl-C to the process group, SIGTERM to the launcher alone,
`kill -9` of a worker (tests/test_worker_death.py, which asserts no wall-clock bound). Real
processes, real signals, a real SQLite store; each test reads the store afterwards, the exit
code and the launcher's last line."""

import os
import signal
import subprocess
import sys
import time

import pytest

from emergence_lab.store import records, sweeps
from tests.conftest import ROOT
from tests.test_concurrent_sweeps import gone, running_workers

pytestmark = [pytest.mark.slow, pytest.mark.timing]

# batch 1: a digits epoch takes about half a second; four cells on two workers, so two are in
# flight (at epoch 2 of 8) and two wait when the signal comes
EPOCHS = 8
SWEEP = ["-m", "dataset=digits", "model.hidden=[16,8]", "trainer.batch_size=1",
         f"trainer.epochs={EPOCHS}", "pruning=magnitude", "pruning.epoch=1",
         "pruning.amount=0,0.3,0.5,0.7", "tracking.progress=false", "hydra.launcher.n_jobs=2"]


def start(tmp_path):
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *SWEEP,
                             f"tracking.uri={uri}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return proc, uri


def children(uri):
    return sweeps.sweep_children(uri, sweeps.latest_sweep(uri).info.run_id)


@pytest.mark.parametrize("how", ["Ctrl-C to the process group", "SIGTERM to the launcher"])
def test_an_interrupted_sweep_ends_within_seconds_with_every_run_killed_and_resumes(tmp_path, how):
    proc, uri = start(tmp_path)
    workers = running_workers(uri, proc, epoch=2)
    sent = time.time()
    if how.startswith("Ctrl-C"):
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does
        sig = signal.SIGINT
    else:
        os.kill(proc.pid, signal.SIGTERM)  # `kill PID`, a scheduler
        sig = signal.SIGTERM
    out = proc.communicate(timeout=60)[0]
    took = time.time() - sent
    assert took <= 5, f"returned {took:.1f} s after the signal"
    assert proc.returncode == 128 + sig, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"Sweep interrupted ({sig.name})"), out[-3000:]
    assert "0 cells finished, 2 interrupted (KILLED, resumable), 0 failed, 2 never started" in last
    assert "Resume with: " in last and "scripts/train.py -m" in last
    assert "Traceback" not in out and "leaked semaphore" not in out, out[-3000:]
    assert gone(workers, timeout=10), "workers outlived their launcher"
    runs = children(uri)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"KILLED"}  # no cell started after
    assert all(r.info.start_time / 1000 < sent for r in runs)
    assert sweeps.latest_sweep(uri).info.status == "KILLED"
    assert all(r.data.tags["error"].startswith("KeyboardInterrupt") for r in runs)
    if not how.startswith("Ctrl-C"):
        return  # resuming does not depend on the signal: the first case resumes

    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *SWEEP,
                            f"tracking.uri={uri}"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = children(uri)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    resumed = [r for r in runs if r.data.tags.get("resumed")]
    assert len(resumed) == 2
    for r in resumed:  # the status notes tell the truth; the history stays
        assert "error" not in r.data.tags and records.NOTE_TAG not in r.data.tags
        assert r.data.tags[records.RESUMED_AFTER_TAG].startswith("KeyboardInterrupt")
        steps = [s for s, _ in records.metric_history(uri, r.info.run_id, "train/loss")]
        assert steps == list(range(1, EPOCHS + 1))  # every epoch once
