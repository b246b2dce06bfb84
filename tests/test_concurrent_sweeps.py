"""Two people running the same sweep on one store, and a launcher stopped from outside: the real
command line, a real SQLite store and a real tracking server on PostgreSQL."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from emergence_lab import procs
from emergence_lab.report.build import build_report
from emergence_lab.store import connection, ledger, records
from tests.conftest import ROOT
from tests.test_server import backend, server  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

# batch 1: a digits epoch takes half a second to a second, so a cell one sweep trains is still
# training when the other sweep's job for it arrives (on a loaded machine a sweep's two jobs
# reach their cells up to about 3 s apart; with 3 epochs one sweep's cell could be finished by
# then, and the other skipped it without waiting)
EPOCHS = 6
SWEEP = ["-m", "dataset=digits", "model.hidden=[16,8]", "trainer.batch_size=1", f"trainer.epochs={EPOCHS}",
         "pruning=magnitude", "pruning.epoch=1", "pruning.amount=0,0.5", "tracking.progress=false"]
KEYS = ("train/loss", "test/acc", "emergence/E", "pruning/sparsity", "time/epoch_s")


def launch(uri, cwd, *more):
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *SWEEP,
                             f"tracking.uri={uri}", *more], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def one_finished_run_per_cell(uri, out):
    runs = records.experiment_runs(uri, "emergence")
    by_cell = {}
    for r in runs:
        by_cell.setdefault(r.data.tags["config_hash"], []).append(r)
    assert len(by_cell) == 2, [r.info.run_name for r in runs]
    client = connection.get_client(uri)
    for cell in by_cell.values():
        assert [r.info.status for r in cell] == ["FINISHED"], [
            (r.info.run_name, r.info.run_id, r.info.start_time, r.data.tags.get("mlflow.parentRunId"),
             {k: v for k, v in r.data.params.items() if k.startswith("lease")}) for r in cell] + [
            ledger.entries(uri, connection.ensure_experiment(uri, "emergence"), "")]
        for key in KEYS:
            steps = [m.step for m in client.get_metric_history(cell[0].info.run_id, key)]
            assert len(steps) == len(set(steps)) and max(steps) == EPOCHS, (key, steps)
    sweeps = [r for r in client.search_runs([connection.ensure_experiment(uri, "emergence")])
              if r.data.tags.get("kind") == "sweep"]
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    report = build_report(uri, sweep=sweeps[0].info.run_id, out=str(out), log_back=False)
    assert "Duplicates" not in (report / "report.md").read_text()


def run_twice(uri, work, delay):
    first = launch(uri, work, "hydra.sweep.dir=a")
    time.sleep(delay)
    second = launch(uri, work, "hydra.sweep.dir=b")
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    if [first.returncode, second.returncode] != [0, 0]:
        pytest.fail(f"exit codes {[first.returncode, second.returncode]}:\n" + "\n---\n".join(
            "\n".join(line for line in o.splitlines() if "View " not in line and " INFO]" not in line)
            for o in outputs), pytrace=False)
    return outputs


@pytest.mark.parametrize("delay", [0, 3], ids=["same instant", "3 s apart"])
def test_the_same_sweep_twice_on_one_sqlite_store(tmp_path, delay):
    uri = f"sqlite:///{tmp_path / 'x.db'}"  # fresh: both create the schema at once
    outputs = run_twice(uri, tmp_path, delay)
    assert "being trained by" in "".join(outputs)  # the later one said it waited
    one_finished_run_per_cell(uri, tmp_path / "report")


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_same_sweep_twice_on_a_postgresql_tracking_server(server, tmp_path):  # noqa: F811
    uri, _ = server
    for delay, folder in ((0, "instant"), (3, "apart")):
        work = tmp_path / folder
        work.mkdir()
        run_twice(uri, work, delay)
        one_finished_run_per_cell(uri, work / "report")
        client = connection.get_client(uri)
        for r in client.search_runs([connection.ensure_experiment(uri, "emergence")]):
            client.delete_run(r.info.run_id)  # the next round starts with no runs


def cells_logging(uri, epoch=1):
    """How many runs have logged training epoch `epoch` or a later one (read with sqlite3, as
    logged_epochs)."""
    try:
        with sqlite3.connect(f"file:{uri[len('sqlite:///'):]}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute("SELECT COUNT(DISTINCT run_uuid) FROM metrics "
                             "WHERE key = 'train/loss' AND step >= ?", (epoch,)).fetchone()
        return row[0] or 0
    except sqlite3.Error:
        return 0


def running_workers(uri, proc, timeout=300, epoch=1):
    """The launcher's worker processes, once two cells have logged epoch `epoch`."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if cells_logging(uri, epoch) >= 2:
            return procs.descendants(proc.pid)
        time.sleep(0.2)
    pytest.fail(f"the sweep ended or stalled: {proc.stdout.read()[-2000:]}")


def gone(pids, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not [p for p in pids if procs.pid_alive(p) and not zombie(p)]:
            return True
        time.sleep(0.5)
    return False


def zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def test_workers_whose_launcher_was_killed_stop_by_themselves(tmp_path):
    """SIGKILL to the launcher alone (SIGTERM and Ctrl-C: tests/test_interrupts.py): nothing is
    forwarded, so each worker notices its launcher is gone and ends its run KILLED."""
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    proc = launch(uri, tmp_path, "trainer.epochs=30")
    workers = running_workers(uri, proc)
    assert workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=120)
    try:
        assert gone(workers, timeout=procs.ORPHAN_GRACE_S + 10), \
            "workers still running after their launcher stopped"
        deadline = time.time() + 60
        while time.time() < deadline:
            runs = records.experiment_runs(uri, "emergence")
            if runs and all(r.info.status == "KILLED" for r in runs):
                break
            time.sleep(0.5)
        assert len(runs) == 2 and {r.info.status for r in runs} == {"KILLED"}, \
            [(r.info.run_name, r.info.status, r.data.tags.get("error")) for r in runs]
    finally:
        for p in workers:
            if procs.pid_alive(p):
                os.kill(p, signal.SIGKILL)
