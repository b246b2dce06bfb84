"""The ledger: entries that two processes cannot both win, and the leases of run owners.

Ledger entries are atomic against the store itself (SQLite, PostgreSQL, an `mlflow server`), not a
local file: MLflow refuses to change a logged param, so logging a param that another process
logged first with another value fails, and whoever logged it first holds it. The ledger of an
experiment is the params of one run in the experiment `emergence-lab-claims` (a stored name); that
run is found through a deleted (hidden) experiment whose name is unique and whose tags are written
with it in one step. A run's owner is its lease tag; taking a run over is a ledger entry.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from emergence_lab.procs import pid_alive
from emergence_lab.store.connection import experiment_id, get_client, retry

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

T = TypeVar("T")


LEDGER_EXPERIMENT = "emergence-lab-claims"  # one ledger run per experiment (a stored name)


LEDGER_ANCHOR = ".emergence-lab-claims/{}"  # a deleted experiment per experiment id
# The anchor's tag naming the ledger run: stores written before 2026-12-04 call it claims_run
# (a deleted experiment cannot be re-tagged, so both stored names are read)
ANCHOR_TAGS = ("ledger_run", "claims_run")


# A run's owner: the tag LEASE_TAG = "<generation> <host>:<pid>:<nonce>@<unix time>", never a
# param (MLflow's Compare shows params as hyperparameters). Taking a run over is decided by the
# ledger entry lease.<run id>.<generation> (first writer wins); stores written before
# 2026-12-06 hold the owners as the run's params lease.<n>, still read.
LEASE_TAG = "owner.lease"
LEASE_PREFIX = "lease."


HEARTBEAT_TAG = "owner.heartbeat"  # "<owner> <unix time>", refreshed while the owner trains
PROGRESS_TAG = "owner.progress"  # "<owner> <unix time>": when the owner last finished an epoch


OWNER_TAG = "owner"


_LEDGER_RUNS: dict[tuple[str, str], str] = {}  # (store, experiment id) -> ledger run id


class LeaseLost(RuntimeError):
    """Another process took over the run this one was training (it was thought dead)."""


def owner_token() -> str:
    """Who this process is: host, pid and a nonce (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _ledger_run(client: MlflowClient, exp_id: str) -> str:
    """The run whose params hold the experiment's ledger, created by the first caller (it never
    changes: looked up once per store and experiment)."""
    key = (client.tracking_uri, exp_id)
    if key not in _LEDGER_RUNS:
        _LEDGER_RUNS[key] = _find_or_make_ledger_run(client, exp_id)
    return _LEDGER_RUNS[key]


def _find_or_make_ledger_run(client: MlflowClient, exp_id: str) -> str:
    from mlflow.exceptions import MlflowException

    name = LEDGER_ANCHOR.format(exp_id)
    anchor = client.get_experiment_by_name(name)
    if anchor is None:
        home = experiment_id(client, LEDGER_EXPERIMENT)
        run = retry(lambda: client.create_run(home, run_name=f"claims-of-experiment-{exp_id}", tags={
            "kind": "claims", "experiment_id": exp_id, "mlflow.note.content": "Which run "
            "trains each cell of experiment " f"{exp_id} (params cell.<config_hash>.<attempt>) "
            "and each sweep's parent run (sweep.<sweep_hash>.<attempt>)."}))
        retry(lambda: client.set_terminated(run.info.run_id, "FINISHED"))
        try:  # the name is unique, and the tag is written with it: one winner
            anchor_id = retry(lambda: client.create_experiment(
                name, tags={ANCHOR_TAGS[0]: run.info.run_id}))
            retry(lambda: client.delete_experiment(anchor_id))  # hidden; name and tags stay
        except MlflowException:
            if client.get_experiment_by_name(name) is None:
                raise
            retry(lambda: client.delete_run(run.info.run_id))
        anchor = client.get_experiment_by_name(name)
    return next(anchor.tags[t] for t in ANCHOR_TAGS if t in anchor.tags)


def set_once(uri: str, exp_id: str, key: str, value: str) -> str:
    """Set `key` to `value` in the experiment's ledger unless another value holds it; returns
    the value that holds (atomic against the store)."""
    from mlflow.exceptions import MlflowException

    client = get_client(uri)
    registry = _ledger_run(client, exp_id)
    try:
        retry(lambda: client.log_param(registry, key, value))
        return value
    except MlflowException:
        held = client.get_run(registry).data.params.get(key)
        if held is None:
            raise
        return held


def entries(uri: str, exp_id: str, prefix: str) -> dict[str, str]:
    """The experiment's ledger entries whose key starts with `prefix`."""
    client = get_client(uri)
    params = client.get_run(_ledger_run(client, exp_id)).data.params
    return {k: v for k, v in params.items() if k.startswith(prefix)}


def _highest(params: Mapping[str, str], prefix: str) -> tuple[int, str | None]:
    """(n, value) of the param `<prefix><n>` with the highest n; (0, None) when there is none."""
    numbered = [(int(k[len(prefix):]), v) for k, v in params.items()
                if k.startswith(prefix) and k[len(prefix):].isdigit()]
    return max(numbered) if numbered else (0, None)


def latest_entry(uri: str, exp_id: str, key: str) -> tuple[int, str | None]:
    """(attempt, value) of the highest `<key>.<attempt>` entry; (0, None) when there is none."""
    return _highest(entries(uri, exp_id, f"{key}."), f"{key}.")


def lease_value(gen: int, owner: str) -> str:
    """The lease tag's value: generation, owner and when the lease was taken."""
    return f"{gen} {owner}@{time.time():.3f}"


def lease_holder(run: Any) -> tuple[int, str | None, float]:
    """(generation, owner, time the lease was taken) of a run; (0, None, 0) for none. The lease
    is the run's tag LEASE_TAG; runs of stores written before it hold it as lease.<n> params."""
    gen, value = _highest(run.data.params, LEASE_PREFIX)  # a run from an older store
    tag = run.data.tags.get(LEASE_TAG)
    if tag:
        tag_gen, _, tag_value = tag.partition(" ")
        if int(tag_gen) >= gen:
            gen, value = int(tag_gen), tag_value
    if value is None:
        return 0, None, 0.0
    owner, _, since = value.rpartition("@")
    return gen, owner, float(since)


def local_pid(owner: str) -> int | None:
    """The pid of an owner that is a process of this host, None for another host's."""
    host, pid, _ = owner.split(":")
    return int(pid) if host == socket.gethostname() else None


def take_lease(uri: str, run_id: str, owner: str) -> bool:
    """Become the run's owner, unless another process became it first: the next generation's
    ledger entry (lease.<run id>.<generation>, atomic against the store) decides; the winner
    then writes the run's lease and owner tags, which every owner check reads."""
    client = get_client(uri)
    run = client.get_run(run_id)
    gen = lease_holder(run)[0] + 1
    value = lease_value(gen, owner)
    if set_once(uri, run.info.experiment_id, f"{LEASE_PREFIX}{run_id}.{gen}", value) != value:
        return False
    retry(lambda: client.set_tag(run_id, LEASE_TAG, value))
    retry(lambda: client.set_tag(run_id, OWNER_TAG, owner))
    return True


def owner_alive(run: Any, stale_after_s: float, stall_after_s: float | None = None
                ) -> tuple[bool, str]:
    """Whether a RUNNING run's owner still trains it, and who that is. An owner is dead when its
    heartbeat is older than stale_after_s, at once when it is a dead process of this host, and
    when it has finished no epoch for stall_after_s (stalled: alive, but not training; its
    heartbeat may go on)."""
    if run.info.status != "RUNNING":
        return False, ""
    _, owner, since = lease_holder(run)
    if owner is None and OWNER_TAG in run.data.tags:  # created, its first lease not yet logged
        owner, since = run.data.tags[OWNER_TAG], run.info.start_time / 1000
    if owner is None:  # a run from before ownership: its process is gone, or it would own it
        return False, ""
    beat_owner, _, beat = run.data.tags.get(HEARTBEAT_TAG, " 0").rpartition(" ")
    last = max(since, float(beat) if beat_owner == owner else 0.0)
    pid = local_pid(owner)
    if pid is not None and not pid_alive(pid):
        return False, owner
    if stall_after_s is not None and time.time() - last_progress(run, owner) > stall_after_s:
        return False, f"{owner} (stalled: no epoch for {stall_after_s:g} s)"
    return time.time() - last <= stale_after_s, owner


def last_progress(run: Any, owner: str) -> float:
    """When `owner` last finished an epoch of the run (or took it, if it has not yet)."""
    _, holder, since = lease_holder(run)
    if holder != owner:
        since = run.info.start_time / 1000
    who, _, when = run.data.tags.get(PROGRESS_TAG, " 0").rpartition(" ")
    return max(since, float(when) if who == owner else 0.0)
