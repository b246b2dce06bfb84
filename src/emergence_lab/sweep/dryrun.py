"""`sweep.dry_run=true`: what a sweep would do, and nothing else: every cell's state (finished,
running elsewhere, new), the time its new cells would take at the epoch time of the store's
finished runs, and no run, file or lock written (store.survey reads a copy of an embedded
store)."""

from __future__ import annotations

from typing import Any

from emergence_lab.config import Config
from emergence_lab.config.identity import config_hash, run_name
from emergence_lab.measure import keys
from emergence_lab.store.survey import survey
from emergence_lab.sweep.status import clock
from emergence_lab.sweep.worker import pool_size

SHOWN = 12  # cells listed per state; the rest are counted


def dry_run(jobs: list[tuple[list[str], Config]], launcher: Any) -> str:
    """The dry run's text for (overrides, checked config) of every job."""
    first = jobs[0][1].tracking
    held = survey(first.uri, first.experiment, first.stale_after_s, keys.EPOCH_TIME)
    states: dict[str, list[str]] = {"finished": [], "running elsewhere": [], "new": []}
    epochs_new = 0
    for overrides, c in jobs:
        h = config_hash(c)
        if c.force or (h not in held.finished and h not in held.running):
            states["new"].append(" ".join(overrides) or run_name(c))
            epochs_new += c.trainer.epochs
        elif h in held.running:
            states["running elsewhere"].append(f"{run_name(c)}: {held.running[h]}")
        else:
            states["finished"].append(held.finished[h])
    lines = [f"Dry run of {len(jobs)} cells into {first.uri} (experiment {first.experiment}); "
             f"nothing is trained or written.",
             "  " + ", ".join(f"{len(v)} {k}" for k, v in states.items())]
    for state, cells in states.items():
        if cells:
            lines.append(f"  {state}:")
            lines += [f"    {cell}" for cell in cells[:SHOWN]]
            lines += [f"    ... and {len(cells) - SHOWN} more"] if len(cells) > SHOWN else []
    lines.append("  " + _estimate(epochs_new, held.epoch_s, launcher))
    return "\n".join(lines)


def _estimate(epochs: int, epoch_s: float | None, launcher: Any) -> str:
    if not epochs:
        return "estimated time: nothing to train"
    if epoch_s is None:
        return (f"estimated time: unknown (no finished run in the store to time an epoch); "
                f"{epochs} epochs to train")
    workers = pool_size(int(launcher.get("n_jobs", 1) or 1))
    return (f"estimated time: ~{clock(epochs * epoch_s / workers)} ({epochs} epochs at "
            f"{epoch_s:.2g} s, the median epoch of the store's finished runs, on {workers} "
            f"worker{'s' if workers > 1 else ''}; a shared pre-prune prefix trains once, so "
            f"less)")
