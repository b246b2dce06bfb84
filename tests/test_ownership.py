"""The ledger and ownership against a real store: one winner per entry, live owners left alone, dead
ones taken over, and a process that lost its run never logs into it again."""

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from emergence_lab.config import validate
from emergence_lab.store import cells as ownership
from emergence_lab.store import connection, ledger, records, sweeps
from tests.conftest import compose_cfg


def _race(uri: str, exp_id: str, value: str, start: float, out) -> None:
    time.sleep(max(0.0, start - time.time()))
    out.put((value, ledger.set_once(uri, exp_id, "cell.abc.1", value)))


def test_one_entry_wins_among_processes_racing_on_a_fresh_store(store):
    exp_id = connection.ensure_experiment(store, "emergence")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 3  # all four past their imports, then at once
    procs = [ctx.Process(target=_race, args=(store, exp_id, f"run{i}", start, out))
             for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    held = {held for _, held in results}
    assert len(held) == 1, results  # every process agrees on one winner
    assert sum(mine == h for mine, h in results) == 1
    assert ledger.entries(store, exp_id, "cell.abc.") == {"cell.abc.1": held.pop()}


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def config(tiny_overrides, *more):
    return validate(compose_cfg(tiny_overrides + list(more)))


def cell_of(c, tags):
    """The store's part of a run plan for cell h1 of config c."""
    return ownership.Cell(c.tracking.uri, c.tracking.experiment, "h1", "cell", tags,
                          force=c.force, on_taken=c.tracking.on_taken,
                          stale_after_s=c.tracking.stale_after_s)


def owned_run(store, owner, age=0.0):
    """A RUNNING run of cell 'h1' owned by `owner`, whose lease and last heartbeat are
    `age` seconds old."""
    exp_id = connection.ensure_experiment(store, "emergence")
    client = connection.get_client(store)
    run_id = client.create_run(exp_id, tags={"config_hash": "h1"}).info.run_id
    then = time.time() - age
    client.log_param(run_id, f"{ledger.LEASE_PREFIX}1", f"{owner}@{then}")
    client.set_tag(run_id, ledger.HEARTBEAT_TAG, f"{owner} {then}")
    assert ledger.set_once(store, exp_id, "cell.h1.1", run_id) == run_id
    return run_id


def test_a_live_owner_keeps_its_cell(tiny_overrides, store):
    c = config(tiny_overrides, "tracking.on_taken=skip")
    run_id = owned_run(store, f"{socket.gethostname()}:{os.getpid()}:x")
    got = ownership.acquire(cell_of(c, {"config_hash": "h1"}))
    assert (got.state, got.run_id) == ("taken", run_id)
    assert got.owner == f"{socket.gethostname()}:{os.getpid()}:x"
    assert len(records.experiment_runs(store, "emergence")) == 1  # nothing new was created


def test_a_dead_owner_on_this_host_is_taken_over_at_once(tiny_overrides, store):
    c = config(tiny_overrides)
    run_id = owned_run(store, f"{socket.gethostname()}:{dead_pid()}:x")  # as after kill -9
    got = ownership.acquire(cell_of(c, {"config_hash": "h1"}))
    assert (got.state, got.run_id) == ("resume", run_id)
    gen, holder, _ = ledger.lease_holder(connection.get_client(store).get_run(run_id))
    assert (gen, holder) == (2, got.owner)


def test_an_owner_on_another_host_is_dead_only_once_its_heartbeat_is_stale(tiny_overrides, store):
    c = config(tiny_overrides, "tracking.on_taken=skip", "tracking.stale_after_s=60",
               "tracking.heartbeat_s=10")
    fresh = owned_run(store, "elsewhere:1:x", age=5)
    assert ownership.acquire(cell_of(c, {})).state == "taken"
    connection.get_client(store).set_tag(fresh, ledger.HEARTBEAT_TAG, f"elsewhere:1:x {time.time()}")
    assert ownership.acquire(cell_of(c, {})).state == "taken"


def test_a_silent_owner_on_another_host_is_taken_over(tiny_overrides, store):
    c = config(tiny_overrides, "tracking.stale_after_s=60", "tracking.heartbeat_s=10")
    stale = owned_run(store, "elsewhere:1:x", age=120)
    got = ownership.acquire(cell_of(c, {}))
    assert (got.state, got.run_id) == ("resume", stale)


def test_a_run_taken_over_is_never_logged_into_again(store):
    with pytest.raises(ledger.LeaseLost, match="was taken over by thief"):
        with records.Run(store, "emergence", "r", {"config_hash": "h"}) as run:
            run.log_metrics({"train/loss": 1.0}, step=1)
            assert ledger.take_lease(store, run.run_id, "thief")
            run.check_owner()  # what the per-epoch callback does before it logs
            run.log_metrics({"train/loss": 2.0}, step=2)
    client = connection.get_client(store)
    assert [m.step for m in client.get_metric_history(run.run_id, "train/loss")] == [1]
    got = client.get_run(run.run_id)
    assert got.info.status == "RUNNING" and "error" not in got.data.tags  # the thief's now


def test_a_finished_parent_is_never_failed_or_killed(store):
    parent = sweeps.start_sweep(store, "emergence", "s", {})
    sweeps.end_sweep(store, parent, "FINISHED")
    for status in ("FAILED", "KILLED"):
        sweeps.end_sweep(store, parent, status)
    assert connection.get_client(store).get_run(parent).info.status == "FINISHED"
    other = sweeps.start_sweep(store, "emergence", "t", {})
    sweeps.end_sweep(store, other, "KILLED")  # an interrupted launcher of the same sweep
    sweeps.end_sweep(store, other, "FINISHED")  # ... and the one that finished its cells
    assert connection.get_client(store).get_run(other).info.status == "FINISHED"


def test_identical_sweeps_share_one_parent(store):
    ids = {sweeps.open_sweep(store, "emergence", f"s{i}", "samehash", {}) for i in range(3)}
    assert len(ids) == 1
    parents = [r for r in connection.get_client(store).search_runs(
        [connection.ensure_experiment(store, "emergence")]) if r.data.tags.get("kind") == "sweep"]
    assert len(parents) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_a_store_in_a_folder_this_user_cannot_write_is_named_at_once():
    folder = Path(tempfile.mkdtemp(prefix="emergence-lab-readonly-", dir="/tmp"))  # traversable
    folder.chmod(0o555)
    code = ("import os, time\nfrom emergence_lab.store import connection\n"
            "os.setgid(65534); os.setuid(65534); t = time.time()\n"
            f"try: connection.check_reachable('sqlite:///{folder}/mlflow.db')\n"
            "except ValueError as e: print(e, round(time.time() - t, 1))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    message, _, seconds = out.stdout.strip().rpartition(" ")
    assert f"the store {folder}/mlflow.db cannot be written (Permission denied)" in message, out
    assert float(seconds) < 1.0
    folder.rmdir()


def test_a_cell_that_finishes_while_it_is_looked_at_is_skipped_not_rerun(tiny_overrides, store,
                                                                        monkeypatch):
    c = config(tiny_overrides)
    run_id = owned_run(store, f"{socket.gethostname()}:{os.getpid()}:x")
    connection.get_client(store).set_terminated(run_id, "FINISHED")
    real, calls = ownership._finished, []

    def finished_after_the_first_look(*args):
        calls.append(args)
        return None if len(calls) == 1 else real(*args)  # it finished just after this read

    monkeypatch.setattr(ownership, "_finished", finished_after_the_first_look)
    got = ownership.acquire(cell_of(c, {"config_hash": "h1"}))
    assert (got.state, got.run_id) == ("skip", run_id)
    assert len(records.experiment_runs(store, "emergence")) == 1


def test_two_forced_reruns_of_one_cell_make_one_new_run(tiny_overrides, store):
    c = config(tiny_overrides, "force=true", "tracking.on_taken=skip")
    old = owned_run(store, f"{socket.gethostname()}:{dead_pid()}:x")
    connection.get_client(store).set_terminated(old, "FINISHED")
    first = ownership.acquire(cell_of(c, {"config_hash": "h1"}))
    second = ownership.acquire(cell_of(c, {"config_hash": "h1"}))
    assert first.state == "new" and (second.state, second.run_id) == ("taken", first.run_id)


def test_another_process_s_unentered_candidate_is_not_taken_over(tiny_overrides, store):
    c = config(tiny_overrides)
    exp_id = connection.ensure_experiment(store, "emergence")
    other = f"{socket.gethostname()}:{os.getpid()}:other"  # made its run, not yet its lease
    candidate = connection.get_client(store).create_run(
        exp_id, tags={"config_hash": "h1", ledger.OWNER_TAG: other}).info.run_id
    got = ownership.acquire(cell_of(c, {"config_hash": "h1"}))
    assert got.state == "new" and got.run_id != candidate
    assert ledger.lease_holder(connection.get_client(store).get_run(candidate))[1] is None


def test_two_takers_of_one_run_one_wins_through_the_ledger(store):
    """The next generation of a run's lease is a ledger entry: of two processes that both saw
    generation 1 and try to take the run over, one wins; the run's tag names it."""
    with records.Run(store, "emergence", "r", {"config_hash": "h"}) as run:
        client = connection.get_client(store)
        seen = client.get_run(run.run_id)
        assert ledger.lease_holder(seen)[:2] == (1, run.owner)
        assert ledger.take_lease(store, run.run_id, "first")
        # the second taker read the run before the first took it: the same generation, lost
        real = client.get_run
        client_get = lambda rid: seen if rid == run.run_id else real(rid)  # noqa: E731
        import unittest.mock as mock

        with mock.patch.object(type(client), "get_run", lambda self, rid: client_get(rid)):
            assert not ledger.take_lease(store, run.run_id, "second")
        assert ledger.lease_holder(client.get_run(run.run_id))[:2] == (2, "first")
        with pytest.raises(ledger.LeaseLost):
            run.check_owner()
