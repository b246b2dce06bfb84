"""The sweep's status as its local launcher shows it: every cell's state, folded from the
events its jobs emit (`run/events.py`), and the time left at the throughput measured so far."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from emergence_lab.errors import one_line
from emergence_lab.store import cells, records

log = logging.getLogger(__name__)

FINAL = ("finished", "skipped", "failed", "interrupted")  # a job's states once it has ended
STALL_NOTE = 0.25  # a job is shown stalled after this share of its tracking.stall_after_s


@dataclasses.dataclass
class Job:
    """One cell as the launcher sees it."""

    overrides: list[str]
    epochs: int | None = None  # the epochs it trains in all (from the sweep's jobs file)
    name: str = ""
    run_id: str | None = None
    uri: str = ""  # the store its run is in
    owner: str | None = None  # its run's owner (ledger.owner_token) while it holds the run
    log: str = ""  # the file its output goes to (Hydra's job log)
    state: str = "waiting"  # waiting, running, finished, skipped, failed, interrupted
    trained: int = 0  # epochs trained in this sweep
    loaded: int = 0  # epochs loaded from the shared pre-prune state
    error: str = ""
    stall_after_s: float | None = None  # its tracking.stall_after_s (from its start event)
    progress_at: float = 0.0  # when it last started or finished an epoch (time.monotonic)
    noted: bool = False  # its stall was said
    cell: dict[str, Any] | None = None  # its store.cells.Cell (a plan's or its start event's)


def end_job_run(job: Job, killed: bool, why: str, ended: bool = True) -> None:
    """The run of a job that ended without ending it: KILLED (resumable) or FAILED, with `why`.
    A job that failed before its run existed (its worker killed in the preflight, a SLURM job
    out of memory while loading its data) gets a FAILED run of its cell saying so
    (store.cells.failed_cell), as a failure its own process caught does; not one whose end is
    not known (`ended` false: a SLURM job vanished, or its controller silent, may still run)."""
    if job.run_id:
        records.end_run(job.uri, job.run_id, "KILLED" if killed else "FAILED", why,
                        only_running=True, owner=job.owner)
    elif ended and not killed and job.cell is not None and job.state not in FINAL:
        try:
            job.run_id = cells.failed_cell(cells.Cell(**job.cell),
                                           f"failed before its run existed: {why}")
            job.uri = job.cell["uri"]
        except Exception as exc:  # the store itself is the trouble: the sweep's end says it
            log.warning("could not record the failed cell %s: %s", job.name, one_line(exc))


@dataclasses.dataclass
class SweepStatus:
    """Every cell's state and the sweep's clock; `line()` is what the launcher shows."""

    jobs: list[Job]
    started: float = dataclasses.field(default_factory=time.monotonic)
    first_epoch_at: float | None = None  # training throughput is measured from here

    def update(self, i: int, event: dict[str, Any]) -> None:
        job, kind = self.jobs[i], event["kind"]
        if kind in ("run", "epoch"):  # the stall clock runs from when it owns its run
            job.progress_at = time.monotonic()
        if kind == "start":
            job.state, job.name = "running", event["name"]
            job.cell = event.get("cell", job.cell)
            job.epochs = event.get("epochs", job.epochs)
            job.stall_after_s = event.get("stall_after_s")
        elif kind == "finished_run":  # it measures a FINISHED run: no failed run is ever due
            job.cell = None
        elif kind == "run":
            job.run_id, job.uri, job.owner = event["run_id"], event["uri"], event.get("owner")
        elif kind == "log":
            job.log = event["path"]
        elif kind == "epoch":
            if event.get("loaded"):
                job.loaded += 1
            else:
                self.first_epoch_at = self.first_epoch_at or time.monotonic()
                job.trained += 1
        elif kind == "end":
            job.state, job.error = event["status"], event.get("error", "")

    def stalled(self, fraction: float = 1.0) -> list[int]:
        """The running jobs that have finished no epoch for `fraction` of their
        tracking.stall_after_s since they own their run (one waiting for another process's
        run, or loading its data, is not stalled)."""
        now = time.monotonic()
        return [i for i, j in enumerate(self.jobs) if j.state == "running" and j.stall_after_s
                and j.run_id and now - j.progress_at > fraction * j.stall_after_s]

    def new_stall_notes(self) -> list[str]:
        """A line for each job newly seen stalled (STALL_NOTE of its tracking.stall_after_s),
        once per job."""
        notes = []
        for i in self.stalled(STALL_NOTE):
            job = self.jobs[i]
            if not job.noted:
                job.noted = True
                notes.append(f"cell {job.name} has finished no epoch for "
                             f"{clock(time.monotonic() - job.progress_at)} (tracking."
                             f"stall_after_s={job.stall_after_s:g}: then it is ended KILLED, "
                             f"resumable)")
        return notes

    def stopped_line(self, signal_name: str, resume: str) -> str:
        """The one line a stopped sweep ends with."""
        started = sum(j.state != "waiting" for j in self.jobs)
        return (f"Sweep interrupted ({signal_name}) after {clock(time.monotonic() - self.started)}"
                f": {self.count('finished', 'skipped')} cells finished, "
                f"{self.count('interrupted', 'running')} interrupted (KILLED, resumable), "
                f"{self.count('failed')} failed, {len(self.jobs) - started} never started. "
                f"Resume with: {resume}")

    def count(self, *states: str) -> int:
        return sum(j.state in states for j in self.jobs)

    def eta_s(self) -> float | None:
        """Seconds left at the throughput measured so far (epochs trained per second, all
        workers together); None before two epochs were trained."""
        trained = sum(j.trained for j in self.jobs)
        if self.first_epoch_at is None or trained < 2:
            return None
        known = [j.epochs for j in self.jobs if j.epochs]
        typical = sum(known) / len(known) if known else 0
        # a cell yet to start will load about as many epochs from a shared state as finished
        # cells did (the sweep's branches share their training before the pruning step)
        done = [j.loaded for j in self.jobs if j.state == "finished"]
        loads = sum(done) / len(done) if done else 0
        left = sum(max(0, (j.epochs or typical) - j.trained
                       - (j.loaded if j.state == "running" else loads))
                   for j in self.jobs if j.state in ("waiting", "running"))
        rate = trained / max(time.monotonic() - self.first_epoch_at, 1e-9)
        return left / rate

    def line(self) -> str:
        """cells finished / running / waiting of N, epochs trained and loaded, elapsed, left."""
        n = len(self.jobs)
        done, skipped = self.count("finished", "skipped"), self.count("skipped")
        parts = [f"cells {done} finished{f' ({skipped} already)' if skipped else ''}, "
                 f"{self.count('running')} running, {self.count('waiting')} waiting of {n}"]
        for state in ("failed", "interrupted"):
            if self.count(state):
                parts[0] += f", {self.count(state)} {state}"
        if self.stalled(STALL_NOTE):
            parts[0] += f", {len(self.stalled(STALL_NOTE))} stalled"
        parts.append(f"epochs {sum(j.trained for j in self.jobs)} trained, "
                     f"{sum(j.loaded for j in self.jobs)} loaded")
        parts.append(f"{clock(time.monotonic() - self.started)} elapsed")
        eta = self.eta_s()
        parts.append(f"~{clock(eta)} left" if eta is not None else "time left: measuring")
        return " | ".join(parts)


def clock(seconds: float) -> str:
    """1h02m, 3m05s, 42s."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
