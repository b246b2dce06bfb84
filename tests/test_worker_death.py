"""A worker killed mid-sweep (`kill -9`, the OOM killer) fails its own cell and the sweep goes
on. Real processes and a real SQLite store; no wall-clock bound, so it runs with the rest of the
suite (the interrupt tests, which time themselves, are tests/test_interrupts.py)."""

import os
import signal

import pytest

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
