"""Sweeps through interruptions and parallel writers: the real command line, a real store."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from emergence_lab.store import connection, records, sweeps
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# batch 1 makes a digits epoch take about a second: long enough to interrupt mid-sweep
SWEEP = ["-m", "dataset=digits", "model.hidden=[32,16]", "trainer.batch_size=1",
         "trainer.epochs=5", "pruning=magnitude", "pruning.epoch=1", "pruning.amount=0,0.5",
         "tracking.uri=sqlite:///x.db", "tracking.progress=false"]


def start(args, cwd):
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, jobs included


def logged_epochs(uri):
    """The highest train/loss step in the store (0 before there is one). Read with sqlite3, not
    MLflow: a client opened while the sweep creates the schema would race its migrations."""
    try:
        with sqlite3.connect(f"file:{uri[len('sqlite:///'):]}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute("SELECT MAX(step) FROM metrics WHERE key = 'train/loss'").fetchone()
        return row[0] or 0
    except sqlite3.Error:
        return 0


def interrupt_when(proc, uri, epoch, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if logged_epochs(uri) >= epoch:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=120)
            return
        time.sleep(0.3)
    pytest.fail(f"the sweep ended or stalled before epoch {epoch}: {proc.stderr.read()[-2000:]}")


def test_a_sweep_interrupted_twice_finishes_each_cell_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    interrupt_when(start(SWEEP, tmp_path), uri, epoch=2)
    interrupt_when(start(SWEEP, tmp_path), uri, epoch=4)
    last = start(SWEEP, tmp_path)
    assert last.wait(timeout=600) == 0, last.stderr.read()[-3000:]
    client = connection.get_client(uri)
    exp = client.get_experiment_by_name("emergence")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("kind") != "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == [
        "digits-mlp-magnitude0-bs1-seed0", "digits-mlp-magnitude0.5-bs1-seed0"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert max(int(r.data.tags.get("resumed", 0)) for r in children) >= 1
    for r in children:
        for key in ("train/loss", "test/acc", "emergence/E", "pruning/sparsity"):
            steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            expected = [1, 2, 3, 4, 5] if key == "train/loss" else [0, 1, 2, 3, 4, 5]
            assert sorted(steps) == expected, (r.info.run_name, key, steps)


def test_four_parallel_jobs_share_one_sqlite_store(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "dataset=digits",
         "model.hidden=[16,8]", "trainer.epochs=3", "trainer.seed=0,1,2,3",
         "hydra.launcher.n_jobs=4", "tracking.uri=sqlite:///x.db", "tracking.progress=false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "database is locked" not in proc.stderr
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    parent = sweeps.latest_sweep(uri)
    children = sweeps.sweep_children(uri, parent.info.run_id)
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    for c in children:
        for key in ("train/loss", "test/acc", "emergence/E", "emergence/E_theta/0.1"):
            steps = sorted(s for s, _ in records.metric_history(uri, c.info.run_id, key))
            assert steps[-3:] == [1, 2, 3] and len(steps) == len(set(steps)), (key, steps)
