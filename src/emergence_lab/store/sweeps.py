"""Sweeps: the parent run of a multirun (opened once per set of cells, whoever launches it), its
children, the latest sweep of a store, and the cells of an experiment that already finished."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from emergence_lab.store.connection import ensure_experiment, get_client, retry
from emergence_lab.store.ledger import latest_entry, lease_holder, set_once

T = TypeVar("T")


MADE_BY_TAG, MADE_BY = "made_by", "emergence-lab"  # a sweep parent of this tool (not another's)
PARENT_TAG = "mlflow.parentRunId"


def start_sweep(uri: str, experiment: str, name: str, tags: Mapping[str, str]) -> str:
    """Create the parent run of a multirun; returns its id."""
    exp_id = ensure_experiment(uri, experiment)
    run = get_client(uri).create_run(exp_id, run_name=name,
                                     tags={"kind": "sweep", MADE_BY_TAG: MADE_BY, **tags})
    return run.info.run_id


def open_sweep(uri: str, experiment: str, name: str, sweep_hash: str,
               tags: Mapping[str, str]) -> str:
    """The parent run of the sweep with these cells: reopened if it exists, else created. Two
    launchers of the same sweep get the same parent (entered in the store's ledger). A FINISHED parent
    stays FINISHED: its cells are all finished, whatever a rerun does."""
    client = get_client(uri)
    exp_id = ensure_experiment(uri, experiment)
    attempt, run_id = latest_entry(uri, exp_id, f"sweep.{sweep_hash}")
    if run_id is None or client.get_run(run_id).info.lifecycle_stage == "deleted":
        found = client.search_runs([exp_id], f"tags.kind = 'sweep' and tags.sweep_hash = '{sweep_hash}'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
        mine = found[0].info.run_id if found else start_sweep(
            uri, experiment, name, {**tags, "sweep_hash": sweep_hash})
        run_id = set_once(uri, exp_id, f"sweep.{sweep_hash}.{attempt + 1}", mine)
        if run_id != mine and not found:
            retry(lambda: client.delete_run(mine))  # another launcher's parent won
    if client.get_run(run_id).info.status != "FINISHED":
        retry(lambda: client.update_run(run_id, status="RUNNING"))
    # when it was last opened: a reopened sweep is the latest one (make report after make sweep)
    retry(lambda: client.set_tag(run_id, OPENED_TAG, f"{time.time():.3f}"))
    return run_id


def end_sweep(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """End a parent run. Its status only moves towards FINISHED: a FINISHED parent is never
    changed, and FAILED or KILLED replace only RUNNING (a concurrent launcher of the same sweep
    that was interrupted does not stop the one that finishes it)."""
    client = get_client(uri)
    now = client.get_run(run_id).info.status
    if now != "FINISHED" and (status == "FINISHED" or now == "RUNNING"):
        retry(lambda: client.set_terminated(run_id, status))


def sweep_children(uri: str, parent_run_id: str) -> list[Any]:
    """The child runs of a sweep, oldest first."""
    client = get_client(uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=10000)


def sweep_runs(uri: str, parent_run_id: str, config_hashes: list[str] | None = None) -> list[Any]:
    """A sweep's runs, oldest first: its children, and FINISHED runs elsewhere in the experiment
    of the cells it names that it has no FINISHED run of (a rerun skips cells finished by
    another sweep). A cell may have several runs (retries, force=true): see report.dedupe."""
    client = get_client(uri)
    runs = sweep_children(uri, parent_run_id)
    have = {r.data.tags.get("config_hash") for r in runs if r.info.status == "FINISHED"}
    exp_id = client.get_run(parent_run_id).info.experiment_id
    for h in sorted(set(config_hashes or []) - have):
        runs += client.search_runs([exp_id], f"tags.config_hash = '{h}' and "
                                   "attributes.status = 'FINISHED'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
    return sorted(runs, key=lambda r: r.info.start_time)


OPENED_TAG = "opened_at"  # a sweep parent's last opening (seconds since the epoch)
LAUNCH_TAG = "last_launch"  # a sweep parent's last launch: its cells' counts and time (JSON)


def record_launch(uri: str, run_id: str, cells: int, trained: int, skipped: int, failed: int,
                  took: str) -> None:
    """What the sweep's last launch did (the report's ending reads it)."""
    client = get_client(uri)
    value = json.dumps({"cells": cells, "trained": trained, "skipped": skipped, "failed": failed,
                        "took": took})
    retry(lambda: client.set_tag(run_id, LAUNCH_TAG, value))


def latest_sweep(uri: str) -> Any | None:
    """The sweep parent most recently started or reopened in the store, or None. Another
    project's runs tagged kind=sweep are not taken for one: ours carry sweep_hash."""
    client = get_client(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, filter_string="tags.kind = 'sweep'",
                              max_results=5000) if exps else []
    runs = [r for r in runs if "sweep_hash" in r.data.tags
            or r.data.tags.get(MADE_BY_TAG) == MADE_BY]

    def opened(run: Any) -> float:
        return max(run.info.start_time / 1000, float(run.data.tags.get(OPENED_TAG, 0)))

    return max(runs, key=opened) if runs else None


def finished_cells(uri: str, experiment: str) -> dict[str, Any]:
    """config_hash -> a FINISHED training run of the experiment (the newest), in one paged
    query; {} when the experiment does not exist yet."""
    client = get_client(uri)
    exp = retry(lambda: client.get_experiment_by_name(experiment))
    if exp is None:
        return {}
    out: dict[str, Any] = {}
    for r in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'",
                                order_by=["attributes.start_time ASC"], max_results=50_000):
        h = r.data.tags.get("config_hash")
        if h and r.data.tags.get("kind") != "sweep":
            out[h] = r
    return out


def running_owners(uri: str, parent_run_id: str) -> dict[str, str]:
    """run id -> owner of a sweep's children that are RUNNING."""
    return {r.info.run_id: owner for r in sweep_children(uri, parent_run_id)
            if r.info.status == "RUNNING" for _, owner, _ in [lease_holder(r)] if owner}
