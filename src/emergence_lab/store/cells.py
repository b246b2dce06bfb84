"""Which process trains a cell, and from where: skip a finished cell, resume an abandoned one,
leave one that another live process trains alone, and start a new run otherwise.

A cell (one config_hash in one experiment) maps to its run through an entry in the store's ledger
(`cell.<config_hash>.<attempt>`, see `ledger.set_once`); a run is trained by the holder of its
latest lease. Both are atomic against the store, so two sweeps on one store, on one machine or
several, never train, resume or log into the same cell at once.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from emergence_lab.store import artifacts, connection, ledger, records

log = logging.getLogger(__name__)
TAKEN_POLL_S = 2.0


@dataclass(frozen=True)
class Cell:
    """What the store needs to know of a run to decide who trains it (the run plan's part for
    this stage): where, which cell (its identity), the run's name and tags, its sweep, and
    the tracking settings that decide."""

    uri: str
    experiment: str
    identity: str
    name: str
    tags: dict[str, Any]
    parent_run_id: str | None = None
    force: bool = False
    on_taken: str = "wait"
    stale_after_s: float = 300.0
    stall_after_s: float | None = None


@dataclass
class Ownership:
    """What this process does with a cell: "skip" (a FINISHED run exists), "new" (it created
    `run_id` and holds it), "resume" (it took over the abandoned `run_id`) or "taken" (another
    live process trains `run_id`)."""

    state: str
    run_id: str | None = None
    owner: str = ""
    run: Any = None


def _finished(uri: str, exp_id: str, identity: str) -> Any | None:
    """The cell's FINISHED run (a store written by older code: scripts/migrate_store.py first)."""
    return next((r for r in records.find_runs(uri, exp_id, identity)
                 if r.info.status == "FINISHED"), None)


def _current(uri: str, exp_id: str, identity: str) -> tuple[int, Any | None]:
    """(attempt, run) the cell's latest ledger entry names; (0, None) for a cell never entered."""
    n, run_id = ledger.latest_entry(uri, exp_id, f"cell.{identity}")
    if run_id is None:
        return 0, None
    run = connection.get_client(uri).get_run(run_id)
    return n, None if run.info.lifecycle_stage == "deleted" else run


def acquire(cell: Cell, notify: Callable[[str], None] | None = None) -> Ownership:
    """Decide, atomically against the store, what this process does with the cell. A cell that
    another live process trains is waited for (tracking.on_taken=wait: then skipped once it
    finishes, taken over if its owner dies) or left to it (skip).

    `notify` says that it waits (default: a log warning).
    force=true makes a new run unless another process already started one for the cell while
    this one decided (two identical forced sweeps rerun each cell once, not twice).
    """
    uri, identity, name = cell.uri, cell.identity, cell.name
    exp_id = connection.ensure_experiment(uri, cell.experiment)
    owner = ledger.owner_token()
    force, said, races = cell.force, False, 0
    while races < 50:  # each race is lost to a process that then holds the cell
        done = None if force else _finished(uri, exp_id, identity)
        if done is not None:
            return Ownership("skip", done.info.run_id, run=done)
        attempt, run = _current(uri, exp_id, identity)
        status = run.info.status if run is not None else None
        if status == "FINISHED" and not force:
            races += 1
            continue  # it finished between the two reads: skip it on the next pass
        if status == "RUNNING":
            alive, holder = ledger.owner_alive(run, cell.stale_after_s, cell.stall_after_s)
            if alive:
                force = False  # a run started meanwhile is this rerun's result too
                if cell.on_taken == "skip":
                    return Ownership("taken", run.info.run_id, holder, run)
                if not said:
                    (notify or log.warning)(f"{name}: run {run.info.run_id} is being trained by "
                                            f"{holder}; waiting for it (tracking.on_taken=skip "
                                            f"leaves it)")
                    said = True
                time.sleep(TAKEN_POLL_S)
                continue
        races += 1
        if not force and status in ("RUNNING", "KILLED"):
            if ledger.take_lease(uri, run.info.run_id, owner):
                return Ownership("resume", run.info.run_id, owner, run)
            continue
        run_id = records.create_owned_run(uri, cell.experiment, name, cell.tags,
                                          cell.parent_run_id, owner)
        if ledger.set_once(uri, exp_id, f"cell.{identity}.{attempt + 1}", run_id) == run_id:
            return Ownership("new", run_id, owner)
        records.delete_run(uri, run_id)  # another process entered the cell first
        force = False
    raise RuntimeError(f"could not own cell {identity} ({name}): the store keeps changing")


def resume_checkpoint(uri: str, run_id: str, workdir: Path) -> dict[str, Any] | None:
    """The run's last checkpoint, None when it has none; a file that torch refuses to load
    with weights_only=True (tampered, or not a checkpoint) raises ValueError naming it."""
    path = artifacts.download_artifact(uri, run_id, "checkpoints/last.pt", workdir)
    if path is None:
        return None
    try:
        with warnings.catch_warnings():  # a refused file is our one-line error, not torch's hint
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ValueError(f"checkpoint checkpoints/last.pt of run {run_id} is refused by "
                         f"torch.load(weights_only=True) ({type(exc).__name__}: {first}); it "
                         f"is not resumed: delete the run or rerun the cell with force=true"
                         ) from None


def failed_cell(cell: Cell, reason: str) -> str:
    """A cell that failed before its run existed (its data did not load, the worker ran out of
    memory in the preflight): a FAILED run of the cell, under its sweep, holding the reason, so
    the sweep lists it with `Redo with` and the UI shows it. It is no run of the cell's ledger:
    the rerun makes the cell's run as if this one were not there. Its id."""
    run_id = records.create_owned_run(cell.uri, cell.experiment, cell.name,
                                      {**cell.tags, "failed_before_run": "true"},
                                      cell.parent_run_id, ledger.owner_token())
    records.end_run(cell.uri, run_id, "FAILED", reason)
    return run_id
