"""A worker killed mid-sweep (`kill -9`, the OOM killer) fails its own cell and the sweep goes
on. Real processes and a real SQLite store; no wall-clock bound, so it runs with the rest of the
suite (the interrupt tests, which time themselves, are tests/test_interrupts.py)."""

import os
import signal
import subprocess
import sys

import pytest

from emergence_lab import procs
from emergence_lab.store import sweeps
from tests.test_concurrent_sweeps import running_workers
from tests.test_interrupts import children, start

pytestmark = pytest.mark.slow


def test_a_killed_worker_fails_its_cell_and_the_sweep_goes_on(tmp_path):
    proc, uri = start(tmp_path)
    running_workers(uri, proc, epoch=2)
    running = [r for r in children(uri) if r.info.status == "RUNNING"]
    victim = running[0]
    os.kill(int(victim.data.tags["owner"].split(":")[1]), signal.SIGKILL)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 1, out[-3000:]
    runs = {r.info.run_name: r for r in children(uri)}
    assert len(runs) == 4
    dead = runs.pop(victim.info.run_name)
    assert dead.info.status == "FAILED"
    assert dead.data.tags["error"] == "worker killed by signal 9 (SIGKILL)"
    assert {r.info.status for r in runs.values()} == {"FINISHED"}  # its sibling and the rest
    assert f"cell {victim.info.run_name} failed: worker killed by signal 9" in out
    shown = out.split(f"cell {victim.info.run_name} failed:")[1].splitlines()[1:3]
    assert shown and all(line.startswith("    ") for line in shown)  # its log's last lines
    assert any(f"{victim.info.run_name} epoch" in line for line in shown), shown
    assert "1 of 4 cells did not finish" in out and "Redo with: " in out
    assert "Traceback" not in out and "leaked semaphore" not in out, out[-3000:]


def test_a_worker_killed_before_its_run_exists_leaves_a_failed_run_of_its_cell(tmp_path, store):
    """The worker dies (`kill -9`, as the OOM killer does) while its job has no run of its own:
    here while it waits for the cell's run, which another live process (this test) holds. The
    sweep records a FAILED run of the cell under it, saying why, and lists it with Redo with."""
    from emergence_lab.run.plan import make_plan
    from emergence_lab.store import cells
    from tests.conftest import ROOT, compose_cfg

    overrides = ["dataset=digits", "model.hidden=[16,8]", "trainer.epochs=2",
                 "tracking.progress=false", f"tracking.uri={store}"]
    plan = make_plan(compose_cfg(overrides), None, overrides)
    held = cells.acquire(plan.cell(plan.tags()))  # this process trains the cell, as it were
    assert held.state == "new"
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), "-m", *overrides,
                             "hydra.launcher.n_jobs=1"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = ""
    while "is being trained by" not in seen and proc.poll() is None:
        seen += proc.stdout.readline()
    assert "is being trained by" in seen, seen[-3000:]
    workers = [p for p in procs.descendants(proc.pid) if parent_of(p) != proc.pid]
    assert workers, "no worker process"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    out = seen + proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, out[-3000:]
    assert f"cell {plan.name} failed: worker killed by signal 9" in out, out[-3000:]
    assert "Redo with: " in out
    assert "Traceback" not in out
    sweep = sweeps.latest_sweep(store).info.run_id
    failed = sweeps.sweep_children(store, sweep)
    assert [r.info.status for r in failed] == ["FAILED"]
    assert failed[0].data.tags["error"] == ("failed before its run existed: worker killed by "
                                            "signal 9 (SIGKILL)")
    assert failed[0].data.tags["config_hash"] == plan.identity
    assert failed[0].info.run_id != held.run_id  # the held run is left to its owner


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])
