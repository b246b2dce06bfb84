"""The sweep's MLflow parent run, opened once and ended in one place (`end`): FINISHED when
every cell finished, FAILED when one did not, KILLED when the sweep was stopped. Whatever way
the launching process exits after opening it (a bad cell, an exception in Hydra's sweeper, a
signal), the parent does not stay RUNNING, unless its cells were left to other live processes
(`leave_open`)."""

from __future__ import annotations

import atexit
import dataclasses
from typing import Any

from emergence_lab import procs
from emergence_lab.store import records, sweeps


@dataclasses.dataclass
class Parent:
    uri: str
    run_id: str
    left_open: bool = False  # its cells are being trained elsewhere: the sweep that ends them ends it
    ended: bool = False


_current: Parent | None = None


def open_parent(uri: str, experiment: str, name: str, sweep_hash: str, tags: dict[str, Any]
                ) -> str:
    """Open (or reopen: the same cells) the sweep's parent run; its id."""
    global _current
    run_id = sweeps.open_sweep(uri, experiment, name, sweep_hash, tags)
    if _current is None:
        atexit.register(_at_exit)
    _current = Parent(uri, run_id)
    return run_id


def current() -> Parent | None:
    """The parent run this process opened and has not ended, None for none."""
    return _current if _current is not None and not _current.ended else None


def end(status: str) -> None:
    """End the sweep's parent run with `status` (FINISHED, FAILED, KILLED; store.sweeps.end_sweep
    only moves it towards FINISHED); later calls do nothing."""
    p = current()
    if p is not None:
        p.ended = True
        sweeps.end_sweep(p.uri, p.run_id, status)


def discard() -> None:
    """The sweep did not start (its folder or its artifacts could not be written): a parent
    with no cell under it is deleted, so that it never becomes 'the latest sweep'; one that
    has cells (a rerun's) ends FAILED. Either way it is not left RUNNING (deleted runs are
    still listed by MLflow's "deleted" view and kept until `mlflow gc`)."""
    p = current()
    if p is None:
        return
    has_cells = bool(sweeps.sweep_children(p.uri, p.run_id))
    end("FAILED")
    if not has_cells:
        records.delete_run(p.uri, p.run_id)


def leave_open() -> None:
    """Its cells are in the hands of other live processes: the parent stays RUNNING."""
    if _current is not None:
        _current.left_open = True


def _at_exit() -> None:
    p = current()
    if p is not None and not p.left_open:
        end("KILLED" if procs.stop_requested.is_set() else "FAILED")
