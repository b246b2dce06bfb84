"""The submitter's watch over a sweep's SLURM jobs (see `sweep/slurm.py`): results, events and
the queue, read every `poll_s`; a job the scheduler ended without a result ends its own cell;
a signal cancels them all."""

from __future__ import annotations

import json
import pickle
import signal
import time
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from emergence_lab.sweep import stop
from emergence_lab.sweep.display import StatusDisplay
from emergence_lab.sweep.status import FINAL, SweepStatus, end_job_run

ACTIVE = ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "RESIZING",
          "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT")
INTERRUPTED = ("CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE")  # ended KILLED: resumable
# a pending job with one of these reasons never starts as the cluster stands
NEVER_STARTS = ("PartitionDown", "PartitionInactive", "PartitionNodeLimit", "PartitionTimeLimit",
                "ReqNodeNotAvail", "BadConstraints", "InvalidAccount", "InvalidQOS",
                "PartitionConfig", "DependencyNeverSatisfied")


class Watch:
    def __init__(self, jobs: list[Any], overrides: list[list[str]], status: SweepStatus,
                 own: dict[str, float], slurm: Any) -> None:
        self.jobs, self.overrides, self.status, self.slurm = jobs, overrides, status, slurm
        self.poll_s = float(own.get("poll_s", 5.0))
        self.vanished_after_s = float(own.get("vanished_after_s", 60.0))
        self.stop_timeout_s = float(own.get("stop_timeout_s", 30.0))
        self.array_id = str(jobs[0].job_id).split("_")[0]
        self.returns: list[JobReturn | None] = [None] * len(jobs)
        self.offsets = [0] * len(jobs)
        self.gone_since: dict[int, float] = {}  # job -> when it was first missing from the queue
        self.silent_since: float | None = None  # the scheduler has not answered since
        self.said: set[int] = set()  # jobs whose hopeless pending reason was said
        self.stopping = False  # the sweep was signalled: its jobs are being cancelled
        self.display = StatusDisplay(status)

    def open(self) -> list[int]:
        return [i for i, r in enumerate(self.returns) if r is None]

    def run(self) -> None:
        with stop.held():
            try:
                while self.open() and stop.first() is None:
                    self.poll()
                    self.display.refresh()
                    self._sleep(self.poll_s)
                if stop.first() is not None:
                    self.cancel(stop.first())
            finally:
                self.display.close()

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and stop.first() is None and self.open():
            time.sleep(0.2)

    def poll(self, grace_s: float | None = None) -> None:
        """Each open job: its events, its result, or the queue's word on it."""
        for i in self.open():
            self._events(i)
            if self.jobs[i].paths.result_pickle.exists():
                self._result(i)
        self._stalls()
        if not self.open():
            return
        queue, accounting, now = self.slurm.queue(self.array_id), None, time.monotonic()
        if queue is None:  # the scheduler does not answer
            self.silent_since = self.silent_since or now
            if now - self.silent_since > self.vanished_after_s:
                for i in self.open():
                    self._lost(i, None, f"the SLURM controller has not answered squeue for "
                                        f"{self.vanished_after_s:g} s")
            return
        self.silent_since = None
        for i in self.open():
            job_id = str(self.jobs[i].job_id)
            if job_id in queue:
                self.gone_since.pop(i, None)
                self._pending(i, *queue[job_id])
                continue
            since = self.gone_since.setdefault(i, now)
            if accounting is None:
                accounting = self.slurm.accounting(self.array_id)
            state = (accounting or {}).get(job_id)
            if state and state.split()[0] not in ACTIVE and now - since >= (grace_s or
                                                                           self.poll_s):
                self._lost(i, state.split()[0], f"SLURM job {job_id} ended {state}")
            elif now - since > self.vanished_after_s:
                why = f"SLURM job {job_id} vanished: not in the queue and no result for " \
                      f"{self.vanished_after_s:g} s" + (
                          "" if accounting is not None else " (no accounting: sacct fails)")
                self._lost(i, None, why)

    def _stalls(self) -> None:
        """A job that finishes no epoch for a while is said, then, at its
        tracking.stall_after_s, cancelled: its run KILLED (resumable)."""
        for note in self.status.new_stall_notes():
            self.display.message(note)
        for i in [i for i in self.status.stalled() if self.returns[i] is None]:
            self._end(i, "interrupted", f"stalled: no epoch for "
                                        f"{self.status.jobs[i].stall_after_s:g} s "
                                        f"(tracking.stall_after_s); SLURM job "
                                        f"{self.jobs[i].job_id} cancelled")
            self.slurm.cancel(str(self.jobs[i].job_id))

    def _events(self, i: int) -> None:
        path = self.jobs[i].paths.folder / f"{self.jobs[i].job_id}_events.jsonl"
        try:
            with path.open() as f:
                f.seek(self.offsets[i])
                lines = f.readlines()
        except OSError:
            return
        for line in lines:
            if not line.endswith("\n"):
                break  # being written: read it whole next time
            self.offsets[i] += len(line.encode())
            event = json.loads(line)
            if event["kind"] == "note":
                self.display.message(event["text"])
            self.status.update(i, event)

    def _result(self, i: int) -> None:
        """The job returned (submitit's result file): its JobReturn, or a failed cell."""
        with self.jobs[i].paths.result_pickle.open("rb") as f:
            outcome, value = pickle.load(f)
        self._events(i)
        job = self.status.jobs[i]
        if outcome == "success" and value.status == JobStatus.COMPLETED:
            self.returns[i] = value
            if job.state not in FINAL:
                job.state = "finished"
            return
        # a failure before the job's run existed (or one submitit caught): its cell only
        error = value._return_value if outcome == "success" else value
        text = str(error).strip().splitlines()[-1] if str(error).strip() else "?"
        reason = text if outcome != "success" else f"{type(error).__name__}: {text}"
        self._end(i, "failed", reason)

    def _lost(self, i: int, state: str | None, why: str) -> None:
        """A job that ended without a result: its run KILLED (cancelled, out of time,
        preempted: resumable) or FAILED, with the scheduler's reason. One whose end no one
        knows (vanished, the controller silent) may still run: a FAILED run of its cell is
        recorded only for a job that had one."""
        self._end(i, "interrupted" if state and state.startswith(INTERRUPTED) else "failed", why,
                  ended=state is not None)

    def _end(self, i: int, state: str, why: str, ended: bool = True) -> None:
        job = self.status.jobs[i]
        self.returns[i] = JobReturn(overrides=self.overrides[i], status=JobStatus.COMPLETED)
        end_job_run(job, state == "interrupted", why, ended)
        if job.state in FINAL:
            return  # it had ended its run itself
        if self.stopping and job.state == "waiting" and not job.run_id:
            return  # cancelled before it started: it never started
        job.state, job.error = state, why
        name = job.name or " ".join(self.overrides[i])
        tail = self.slurm.log_tail(self.jobs[i]) if state == "failed" else []
        self.display.message(f"cell {name} {state}: {why}" + "".join(f"\n    {x}" for x in tail))

    def _pending(self, i: int, state: str, reason: str) -> None:
        if state == "PENDING" and reason.startswith(NEVER_STARTS) and i not in self.said:
            self.said.add(i)
            self.display.message(f"SLURM job {self.jobs[i].job_id} is pending and will not start "
                                 f"as the cluster stands: {reason} (scancel {self.array_id} and "
                                 f"change hydra.launcher's partition or resources)")

    def cancel(self, signum: int) -> None:
        """A signal to the submitter: every job of the sweep cancelled; their runs KILLED."""
        name, self.stopping = signal.Signals(signum).name, True
        self.display.message(f"{name}: stopping the sweep: its SLURM jobs are cancelled (scancel "
                             f"{self.array_id}); the runs in flight end KILLED (within "
                             f"{self.stop_timeout_s:g} s)")
        self.slurm.cancel(self.array_id)
        deadline = time.monotonic() + self.stop_timeout_s
        while self.open() and time.monotonic() < deadline:
            time.sleep(1.0)
            self.poll(grace_s=0.0)
        for i in self.open():
            self._end(i, "interrupted", f"the sweep was stopped ({name}); SLURM job "
                                        f"{self.jobs[i].job_id} cancelled")
