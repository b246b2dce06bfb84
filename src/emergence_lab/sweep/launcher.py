"""The sweep's local launcher (`hydra/launcher=processes`): a pool of worker processes that
survives what kills joblib's.

Each worker is a process (forked from a fork server that has imported torch, MLflow and Hydra
once) that runs one job at a time (Hydra's `run_job`, as joblib's launcher does) with the plan
the sweep made for it, and tells the launcher, over its pipe, what its job is doing
(`run.events`). So the launcher knows every cell's state and shows it as one status line, and:

- a signal (Ctrl-C to the process group or to the launcher alone, SIGTERM from `kill` or a
  scheduler; `sweep/stop.py` owns them in this process) starts no further cell; the workers'
  jobs end their runs KILLED (a worker coalesces a second signal) and the launcher returns
  within `stop_timeout_s` (a worker still busy then is killed and its run marked KILLED here),
  saying what finished, was interrupted and never started;
- a worker that dies (`kill -9`, the OOM killer) fails its own cell only: its run is marked FAILED
  with the signal, a new worker takes the next cell, and the sweep goes on;
- the jobs' output (per-epoch lines, warnings) goes to each job's log (Hydra's
  `<sweep dir>/<num>/<task>.log`), not the terminal; a failing cell's last lines are shown.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from emergence_lab.sweep import parent, stop
from emergence_lab.sweep.display import StatusDisplay
from emergence_lab.sweep.jobs import command_line, offered, planned_epochs
from emergence_lab.sweep.status import FINAL, Job, SweepStatus, end_job_run
from emergence_lab.sweep.worker import pool_size, worker_context, worker_main, worker_threads

log = logging.getLogger(__name__)


class _Worker:
    """A worker process, its end of the pipe and the job it runs (None: idle)."""

    def __init__(self, ctx: multiprocessing.context.BaseContext, setup: bytes, threads: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child,), name="emergence-lab-worker")
        self.proc.start()
        child.close()
        self.send(threads)  # before the setup, whose unpickling imports torch
        self.conn.send_bytes(setup)
        self.job: int | None = None

    def send(self, msg: Any) -> None:
        self.conn.send_bytes(pickle.dumps(msg))

    def close(self, timeout: float) -> None:
        try:
            self.send(None)
        except OSError:
            pass
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(1)


class Pool:
    """The launcher's loop over its workers (see the module docstring)."""

    def __init__(self, setup: bytes, n_jobs: int, stop_timeout_s: float, status: SweepStatus,
                 job_overrides: list[list[str]], max_failures: int | None = None) -> None:
        self.max_failures = max_failures  # sweep.max_failures: then no new cell starts
        self.setup, self.n_jobs, self.stop_timeout_s = setup, n_jobs, stop_timeout_s
        self.threads = worker_threads(n_jobs, len(job_overrides))
        # the fork server starts once, for every worker (or has, in start_server)
        self.ctx = worker_context(self.threads)
        self.status, self.job_overrides = status, job_overrides
        self.returns: list[JobReturn | None] = [None] * len(job_overrides)
        self.pending = collections.deque(range(len(job_overrides)))
        self.workers: list[_Worker] = []
        self.display = StatusDisplay(status)
        self.stop_deadline: float | None = None

    def busy(self) -> list[_Worker]:
        return [w for w in self.workers if w.job is not None]

    @property
    def signum(self) -> int | None:
        """The signal that stops the sweep (sweep.stop owns them), None while none came."""
        return stop.first()

    def run(self) -> None:
        with stop.held():
            self._loop()

    def _loop(self) -> None:
        try:
            while self.busy() or (self.pending and self.stop_deadline is None
                                  and not self.failed_out()):
                if self.signum is not None and self.stop_deadline is None:
                    self._stop()
                if self.stop_deadline is None:
                    self._fill()
                self._step(timeout=0.5)
                if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
                    self._kill_busy()
                self._stalls()
                self.display.refresh()
        finally:
            for w in self.workers:
                w.close(timeout=2.0 if self.signum is None else 0.5)
            self.display.close()

    def failed_out(self) -> bool:
        """Whether sweep.max_failures cells have failed (no new cell starts)."""
        return self.max_failures is not None and self.status.count("failed") >= self.max_failures

    def _fill(self) -> None:
        while self.pending and len(self.busy()) < self.n_jobs and not self.failed_out():
            idle = [w for w in self.workers if w.job is None and w.proc.is_alive()]
            worker = idle[0] if idle else self._new_worker()
            worker.job = self.pending.popleft()
            overrides, plan = self.job_overrides[worker.job], offered(self.job_overrides[worker.job])
            if plan is not None:  # what a failure before the job's run exists is recorded as
                job = self.status.jobs[worker.job]
                job.cell, job.name = dataclasses.asdict(plan.cell(plan.tags())), plan.name
            worker.send((worker.job, overrides, plan))

    def _new_worker(self) -> _Worker:
        self.workers = [w for w in self.workers if w.proc.is_alive()]
        worker = _Worker(self.ctx, self.setup, self.threads)
        self.workers.append(worker)
        return worker

    def _step(self, timeout: float) -> None:
        busy = self.busy()
        ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=timeout)
        for w in busy:
            while w.job is not None and w.conn in ready and w.conn.poll():
                try:
                    self._on_message(w, pickle.loads(w.conn.recv_bytes()))
                except (EOFError, OSError, pickle.UnpicklingError):
                    break
            if w.job is not None and not w.proc.is_alive():
                self._on_death(w)

    def _on_message(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        kind, job = msg[0], w.job
        if kind == "event":
            if msg[1]["kind"] == "note":
                self.display.message(msg[1]["text"])
            self.status.update(job, msg[1])
            return
        if kind == "done":
            completed, value, rest = msg[1], msg[2], msg[3]
            self.returns[job] = JobReturn(
                overrides=self.job_overrides[job], _return_value=value,
                status=JobStatus.COMPLETED if completed else JobStatus.FAILED,
                cfg=_config(rest["cfg"]), hydra_cfg=_config(rest["hydra_cfg"]),
                working_dir=rest["working_dir"], task_name=rest["task_name"])
            state = self.status.jobs[job]
            if state.state in ("waiting", "running"):  # it ended before its run did (an error)
                state.state = "finished" if completed else "failed"
                state.error = "" if completed else f"{type(value).__name__}: {value}"
            if state.state == "failed":
                self.display.message(self._failure_text(job))
        elif kind == "interrupted":
            self.status.jobs[job].state = "interrupted"
        w.job = None

    def _on_death(self, w: _Worker, stalled: str | None = None) -> None:
        """A worker died with a job: its run FAILED (or KILLED when the sweep is stopping, or
        when the launcher killed it for `stalled`, the reason: resumable); one that died before
        its run existed, a FAILED run of its cell (status.end_job_run)."""
        job, code = w.job, w.proc.exitcode
        w.job = None
        state = self.status.jobs[job]
        self.returns[job] = JobReturn(overrides=self.job_overrides[job], status=JobStatus.COMPLETED,
                                      _return_value=None)
        if state.state in FINAL:
            return  # it died after its job had ended
        why = stalled or (f"worker killed by signal {-code} ({signal.Signals(-code).name})"
                          if code and code < 0 else f"worker exited with code {code}")
        killed = self.signum is not None or stalled is not None
        end_job_run(state, killed, why)
        state.state, state.error = ("interrupted" if killed else "failed"), why
        if stalled is not None:
            self.display.message(f"cell {state.name} ended KILLED (resumable): {why}")
        elif not killed:
            self.display.message(self._failure_text(job))

    def _failure_text(self, job: int) -> str:
        state = self.status.jobs[job]
        name = state.name or " ".join(self.job_overrides[job])
        text = f"cell {name} failed: {state.error.splitlines()[0] if state.error else '?'}"
        tail = _log_tail(state.log)
        return text + ("".join(f"\n    {line}" for line in tail) if tail else "")

    def _stop(self) -> None:
        """The first signal: no new cell; the busy workers' jobs are told to stop."""
        name = signal.Signals(self.signum).name
        self.display.message(f"{name}: stopping the sweep: no new cell starts; the runs in "
                             f"flight end KILLED (within {self.stop_timeout_s:g} s)")
        self.stop_deadline = time.monotonic() + self.stop_timeout_s
        for w in self.busy():
            try:  # Ctrl-C in a terminal reached them too: a worker counts only its first signal
                os.kill(w.proc.pid, self.signum)
            except ProcessLookupError:
                pass

    def _stalls(self) -> None:
        """A job that finishes no epoch for a while is said (a quarter of its
        tracking.stall_after_s), then, at it, killed: its run KILLED (resumable), its worker
        replaced."""
        for note in self.status.new_stall_notes():
            self.display.message(note)
        stalled = set(self.status.stalled())
        for w in [w for w in self.busy() if w.job in stalled]:
            limit = self.status.jobs[w.job].stall_after_s
            w.proc.kill()
            w.proc.join(2)
            self._on_death(w, f"stalled: no epoch for {limit:g} s (tracking.stall_after_s)")

    def _kill_busy(self) -> None:
        for w in self.busy():
            w.proc.kill()
            w.proc.join(2)
            self._on_death(w)

    def summary(self) -> str:
        return self.status.stopped_line(signal.Signals(self.signum).name, command_line())


def _config(text: str | None) -> Any:
    """A job's config back from the YAML its worker sent (None stays None)."""
    from omegaconf import OmegaConf

    return OmegaConf.create(text) if text is not None else None


def _log_tail(path: str, lines: int = 8) -> list[str]:
    """The last lines of a job's log (the path its worker reported; none before that)."""
    try:
        text = Path(path).read_text(errors="replace").splitlines() if path else []
    except OSError:
        return []
    return [line[:300] for line in text if line.strip()][-lines:]


def launch(launcher: Any, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run the jobs on `launcher.n_jobs` workers; returns their JobReturns in order. After a
    signal, the sweep ends here: one line of summary and exit code 128 + the signal."""
    from hydra.core.singleton import Singleton
    from joblib.externals import cloudpickle
    from omegaconf import OmegaConf  # by value: the task function lives in __main__

    config = launcher.config
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    job_overrides = [list(o) for o in job_overrides]
    epochs = planned_epochs(sweep_dir, job_overrides)
    status = SweepStatus([Job(o, e) for o, e in zip(job_overrides, epochs, strict=True)])
    n_jobs = pool_size(launcher.n_jobs)
    workers = min(n_jobs, len(job_overrides))
    setup = cloudpickle.dumps({"hydra_context": launcher.hydra_context, "config": config,
                               "task_function": launcher.task_function,
                               "singleton_state": Singleton.get_state(),
                               "initial_job_idx": initial_job_idx})
    log.info("launching %d jobs on %d workers; each job's output: %s", len(job_overrides),
             workers, sweep_dir / "<job>" / f"{config.hydra.job.name}.log")
    max_failures = OmegaConf.select(config, "sweep.max_failures", default=None)
    pool = Pool(setup, n_jobs, launcher.stop_timeout_s, status, job_overrides, max_failures)
    pool.run()
    if pool.failed_out() and pool.pending:
        print(f"Stopped after {max_failures} failed cells (sweep.max_failures={max_failures}): "
              f"{len(pool.pending)} cells were not started", file=sys.stderr, flush=True)
    if pool.signum is not None:
        parent.end("KILLED")
        print(pool.summary(), file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Nothing is left to do: the runs and the sweep's parent are closed. Tearing down an
        # interpreter that holds torch, MLflow and Hydra takes seconds a user waits for.
        os._exit(128 + pool.signum)
    return [r if r is not None else JobReturn(overrides=o, status=JobStatus.COMPLETED)
            for r, o in zip(pool.returns, job_overrides, strict=True)]
