"""What a job tells its launcher as it goes: one event at a time through `emit`.

A sweep's local launcher (`sweep/launcher.py`) installs a sink in each worker process and folds
the events of every job into the sweep's status line (`sweep/status.py`). Outside such a
launcher (a single run, Ray, SLURM) there is no sink and `emit` does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_sink: Callable[[dict[str, Any]], None] | None = None


def set_sink(sink: Callable[[dict[str, Any]], None] | None) -> None:
    """Where this process's events go (the launcher's pipe), None for nowhere."""
    global _sink
    _sink = sink


def emit(kind: str, **fields: Any) -> None:
    """One event of the current job: log (path), start (name, epochs, its cell), run (run_id,
    uri: the run it owns), finished_run (run_id: the FINISHED run it measures again), epoch
    (epoch, loaded), note (text), end (status, error). A launcher that has gone away loses it,
    nothing else."""
    if _sink is not None:
        try:
            _sink({"kind": kind, **fields})
        except (OSError, ValueError):  # the launcher's pipe is closed: it is stopping
            pass
