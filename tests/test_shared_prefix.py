"""The shared pre-prune state: siblings waiting for it lend their threads to the job computing it."""

import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from emergence_lab.run.checkpoint import Waiters, _machine_cpus, shared_prefix
from tests.conftest import ROOT

WAITER = """
import sys, torch
torch.set_num_threads(1)
from emergence_lab.run.checkpoint import shared_prefix
payload, cached = shared_prefix(sys.argv[1], "k", lambda borrow: {"value": torch.zeros(2)})
print("hit" if cached else "miss", payload["value"].tolist())
"""


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(_machine_cpus() < 2, reason="needs 2 CPUs to lend a thread")
@pytest.mark.parametrize("lend", [True, False])
def test_a_waiting_sibling_lends_its_thread_to_the_job_computing_the_prefix(
        tmp_path, one_thread, lend):
    seen, waiter = [], None

    def compute(borrow):
        nonlocal waiter
        borrow()
        seen.append(torch.get_num_threads())  # nobody waits yet: its own thread only
        waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(tmp_path)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not list((tmp_path / "k.waiting").glob("*")):
            assert waiter.poll() is None and time.monotonic() < deadline, waiter.stderr.read()
            time.sleep(0.05)
        borrow()
        seen.append(torch.get_num_threads())
        return {"value": torch.ones(2)}

    payload, cached = shared_prefix(tmp_path, "k", compute, lend=lend)
    assert (cached, seen) == (False, [1, 2] if lend else [1, 1])  # pinned threads stay pinned
    assert torch.get_num_threads() == 1  # given back
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert out.split() == ["hit", "[1.0,", "1.0]"]  # it waited, then loaded the computed state
    assert list((tmp_path / "k.waiting").glob("*")) == []  # its marker is gone


def test_waiters_count_only_live_processes_of_this_host(tmp_path):
    folder = tmp_path / "k.waiting"
    folder.mkdir()
    host = socket.gethostname()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        (folder / f"{host}--{sleeper.pid}").write_text("3")
        (folder / f"{host}--{dead.pid}").write_text("5")  # killed while waiting: ignored
        (folder / f"other-node--{sleeper.pid}").write_text("7")  # a shared cache's other host
        (folder / f"{host}--{os.getpid()}").write_text("11")  # itself
        (folder / f"{host}--garbage").write_text("2")
        assert Waiters(folder).threads() == 3
    finally:
        sleeper.kill()
        sleeper.wait()
    assert Waiters(folder).threads() == 0
    assert Waiters(tmp_path / "absent").threads() == 0
