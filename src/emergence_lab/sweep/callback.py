"""Hydra multirun glue: check every job's config up front, and one MLflow parent run per sweep.

The callback runs in the launching process, before any job: it composes and validates every
job's config (a bad value fails the sweep before a run exists), creates the store and the
experiment (parallel jobs never race on schema creation) and the parent run, whose id it leaves
in the sweep dir for the jobs. It works with any sweeper: a grid (Hydra's basic sweeper, only
discrete choices and ranges) is expanded and every cell checked; a search whose jobs are only
known as it goes (Optuna's sweeper) has its fixed overrides checked up front and each job's
config when the job starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from emergence_lab.config import Config
from emergence_lab.config.code_version import code_state, git_commit
from emergence_lab.config.identity import (
    config_hash,
    environment,
    source_name,
    stable_hash,
    user_name,
)
from emergence_lab.data import check_available
from emergence_lab.errors import fail, one_line
from emergence_lab.measure import keys as mk
from emergence_lab.measure.counting import COUNTINGS
from emergence_lab.procs import forward_signal
from emergence_lab.run.plan import RunPlan
from emergence_lab.run.preflight import preflight
from emergence_lab.store import artifacts, connection, ledger, sweeps
from emergence_lab.store.network_fs import check_shared_store
from emergence_lab.sweep import parent, stop
from emergence_lab.sweep.dryrun import dry_run
from emergence_lab.sweep.jobs import (
    JOBS_FILE,
    PARENT_FILE,
    _is_grid,
    check_launcher,
    command_line,
    jobs_run_here,
    offer,
    plan_sweep,
    sweep_job_configs,
    validate_sweep,
)
from emergence_lab.sweep.status import clock
from emergence_lab.sweep.worker import start_server, stop_server

log = logging.getLogger(__name__)


ENVIRONMENT_FILE = "environment/requirements.txt"  # on the parent: the packages a sweep ran with
CHECK_NOTE_CELLS = 8  # a sweep of more cells says what it checks before its first cell starts
SIGNAL_GRACE_S = 30.0  # how long an interrupted launcher waits for its workers' runs to end


def other_code_note(reused: list[Any]) -> None:
    """One line when finished cells this sweep reuses were trained by other code (another
    commit, or an edited tree): they are kept; force=true retrains them."""
    here = (git_commit(), code_state())
    made_by = [(r.data.tags.get("git_commit", "?"), r.data.tags.get("git_state", ""))
               for r in reused]
    other = set(made_by) - {here}
    if other:
        n = sum(v != here for v in made_by)
        versions = ", ".join(f"{c[:10]}{' ' + st if st and st != 'clean' else ''}"
                             for c, st in sorted(other)[:3])
        print(f"note: {n} of the {len(reused)} finished cells this sweep reuses were trained by "
              f"other code ({versions}{', ...' if len(other) > 3 else ''}; this is "
              f"{here[0][:10]}{' ' + here[1] if here[1] not in ('', 'clean') else ''}): they are "
              f"kept as they are; force=true retrains them", file=sys.stderr, flush=True)


class SweepCallback(Callback):
    """Validates the whole sweep and brackets it with an MLflow parent run.

    The parent is identified by the sweep's cells (tag sweep_hash): rerunning the same sweep
    reopens it, so resumed and skipped cells stay under one parent. At the end, failed cells
    are listed and the command exits non-zero.
    """

    def __init__(self) -> None:
        self.uri: str | None = None
        self.run_id: str | None = None
        self.jobs: list[dict[str, Any]] = []
        self.grid = True  # the jobs are known up front (else a search: see sweep_job_configs)
        self.stale_after_s: float | None = None  # the jobs' tracking.stale_after_s
        self.started = time.time()  # when the launch began (on_multirun_start)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        # Hydra turns a callback's exception into a warning and launches the jobs anyway;
        # SystemExit passes through it, so a bad sweep stops here, before any run exists.
        try:
            self._start(config)
        except BaseException as exc:
            stop_server()  # no job will run
            if not isinstance(exc, SystemExit):
                parent.discard()
            if not isinstance(exc, Exception):
                raise
            fail(f"Sweep not started: {exc if isinstance(exc, ValueError) else one_line(exc)}")

    def _start(self, config: DictConfig) -> None:
        self.grid = _is_grid(config)
        composed = sweep_job_configs(config)
        if len(composed) > CHECK_NOTE_CELLS:  # seconds, not instant: say what is going on
            log.info("checking the %d cells this command leaves: configs, networks, data, store",
                     len(composed))
        jobs = validate_sweep(composed)
        first = jobs[0].tracking
        if any((j.tracking.uri, j.tracking.experiment) != (first.uri, first.experiment)
               for j in jobs):
            raise ValueError("all jobs of a sweep must share tracking.uri and tracking.experiment")
        check_launcher(config.hydra.launcher, jobs)
        if not jobs_run_here(config.hydra.launcher):  # jobs on other nodes share the store
            check_shared_store(first.uri)
        if jobs[0].sweep.dry_run:  # says what it would do; nothing started, nothing written
            print(dry_run([(o, j) for (o, _), j in zip(composed, jobs, strict=True)],
                          config.hydra.launcher), flush=True)
            sys.exit(0)
        connection.check_reachable(first.uri)
        if self.grid:  # its imports go on meanwhile
            start_server(config.hydra.launcher, len(composed))
        self.jobs = [{"overrides": sorted(o), "config_hash": config_hash(j),
                      "epochs": j.trainer.epochs}
                     for (o, _), j in zip(composed, jobs, strict=True)] if self.grid else []
        # every cell finished (one store query): nothing will run, so nothing to preflight
        done = self._all_finished(jobs) if self.grid else None
        plans = self._check(config, composed, jobs) if done is None else []
        self._open(config, first, len(jobs), plans)
        if done is not None:  # nothing to train or measure: no job is launched
            sweeps.record_launch(first.uri, self.run_id, done, 0, done, 0, self._took())
            parent.end("FINISHED")
            print(f"{done} of {done} cells already finished (force=true reruns them): the report "
                  f"of this sweep is make report (scripts/report.py --tracking-uri {first.uri})",
                  flush=True)
            sys.exit(0)
        log.info("sweep of %d jobs: MLflow parent run %s in %s", len(jobs), self.run_id, first.uri)

    def _check(self, config: DictConfig, composed: list[tuple[list[str], DictConfig]],
               jobs: list[Config]) -> list[RunPlan]:
        """Every job's network and data (preflight), every data set's files; the jobs' plans,
        which the local launcher hands them (for a grid run on this machine)."""
        local = jobs_run_here(config.hydra.launcher)
        for (overrides, _), job in zip(composed, jobs, strict=True):
            try:
                preflight(job, device=local)
            except ValueError as exc:
                raise ValueError(f"{exc}\n  in the sweep job with overrides {overrides}") from None
        for dataset in {json.dumps(dataclasses.asdict(d), sort_keys=True): d for j in jobs
                        for d in (j.dataset, j.pretrain.dataset) if d is not None}.values():
            check_available(dataset)
        plans = plan_sweep(composed, jobs) if local and self.grid else []
        return [dataclasses.replace(p, preflighted=True) for p in plans]

    def _open(self, config: DictConfig, first: Any, n_jobs: int, plans: list[RunPlan]) -> None:
        """The parent run (sweep.parent), the files the launcher and the jobs read in the sweep
        dir, the plans offered to the launcher, and the signals (sweep.stop)."""
        # a grid is identified by its cells; a search by its arguments and its sweep dir
        sweep_hash = stable_hash(sorted(j["config_hash"] for j in self.jobs)) if self.grid else \
            stable_hash([str(config.hydra.sweep.dir), list(config.hydra.overrides.task)])
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        self.uri, self.stale_after_s = first.uri, first.stale_after_s
        self.run_id = parent.open_parent(
            first.uri, first.experiment, f"{first.experiment}-{sweep_dir.name}", sweep_hash,
            {"sweep_dir": str(sweep_dir), "jobs": str(n_jobs),
             "overrides": " ".join(config.hydra.overrides.task)[:5000],
             "mlflow.user": user_name(), "mlflow.source.name": source_name(),
             "mlflow.source.type": "LOCAL", "mlflow.source.git.commit": git_commit()})
        offer([dataclasses.replace(p, parent_run_id=self.run_id) for p in plans])
        artifacts.log_json(first.uri, self.run_id, self.jobs, JOBS_FILE)
        artifacts.log_text(first.uri, self.run_id, environment(), ENVIRONMENT_FILE)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / JOBS_FILE).write_text(json.dumps(self.jobs))  # the launcher's plan
        (sweep_dir / PARENT_FILE).write_text(json.dumps({
            # jobs on this machine watch the launcher, and stop when it dies; a scheduler's
            # jobs outlive their submitter (it cancels them when it is stopped)
            "run_id": self.run_id, "uri": first.uri,
            "launcher_pid": os.getpid() if jobs_run_here(config.hydra.launcher) else None,
            "launcher_host": socket.gethostname()}))
        stop.install(self._stop)

    def _took(self) -> str:
        return clock(time.time() - self.started)

    def _all_finished(self, jobs: list[Config]) -> int | None:
        """The number of cells when every one already has a FINISHED run holding its
        threshold setting's series and its landscape's (one store query): then nothing needs a
        job; else None."""
        if any(j.force for j in jobs):
            return None
        first = jobs[0].tracking
        finished = sweeps.finished_cells(first.uri, first.experiment)
        hashes = {j["config_hash"] for j in self.jobs}
        other_code_note([finished[h] for h in hashes if h in finished])
        for job in jobs:
            run = finished.get(config_hash(job))
            wanted = [mk.setting_keys(job.threshold.setting().with_counting(k))[0]
                      for k in COUNTINGS.names()] + job.landscape.metric_keys()
            if run is None or any(k not in run.data.metrics for k in wanted):
                return None
        return len(hashes)

    def _stop(self, signum: int) -> None:
        """The first signal outside the local pool (sweep.stop): a launcher whose jobs run in
        processes it does not watch. `kill` or a scheduler signals the launcher alone: the
        workers training this sweep's runs get the signal too, and the launcher waits (a while)
        for them to mark the runs KILLED before its pool is torn down."""
        owners = sweeps.running_owners(self.uri, self.run_id)
        pids = [pid for o in owners.values() if (pid := ledger.local_pid(o)) is not None]
        sent = forward_signal(signum, pids)
        log.warning("%s: stopping the sweep (forwarded to workers %s)",
                    signal.Signals(signum).name, sent)
        deadline = time.monotonic() + SIGNAL_GRACE_S
        while sent and time.monotonic() < deadline and set(owners) & set(
                sweeps.running_owners(self.uri, self.run_id)):
            time.sleep(0.3)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if parent.current() is None:
            return
        runs = sweeps.sweep_runs(self.uri, self.run_id, [j["config_hash"] for j in self.jobs])
        if not self.grid:  # a search: every job that made a run is one of its cells
            self.jobs = [{"overrides": [r.data.tags.get("overrides", "")],
                          "config_hash": r.data.tags.get("config_hash")} for r in runs]
        # a cell is what its latest run says (sweep_runs: oldest first): a forced run that
        # failed is not hidden by the cell's older FINISHED one
        latest = {r.data.tags.get("config_hash"): r for r in runs}
        cells = {h for h, r in latest.items() if r.info.status == "FINISHED"
                 and not r.data.tags.get(mk.MEASURE_ERROR_TAG)}
        missing = [j for j in self.jobs if j["config_hash"] not in cells]
        now = {h for h in cells if (latest[h].info.end_time or 0) / 1000 >= self.started}
        sweeps.record_launch(self.uri, self.run_id, len(self.jobs), len(now),
                             len(cells - now), len(missing), self._took())
        elsewhere = {h: owner for h, r in latest.items() if h not in cells
                     for alive, owner in [ledger.owner_alive(r, self.stale_after_s)] if alive}
        if not missing:
            parent.end("FINISHED")
            return
        if len(elsewhere) == len(missing):  # all in the hands of other live processes
            log.warning("%d cells are being trained by other processes and were left to them:"
                        "\n%s", len(missing), "\n".join(
                            f"  {latest[h].info.run_name} (run {latest[h].info.run_id}): {o}"
                            for h, o in elsewhere.items()))
            parent.leave_open()  # it stays RUNNING until a sweep finishes them
            return
        parent.end("FAILED")
        lines = []
        for j in missing:
            r = latest.get(j["config_hash"])
            if r is None:
                lines.append(f"  not finished: {' '.join(j['overrides'])}")
            elif j["config_hash"] in elsewhere:
                lines.append(f"  {r.info.run_name}: being trained by {elsewhere[j['config_hash']]}")
            else:
                why = r.data.tags.get("error") or r.data.tags.get(mk.MEASURE_ERROR_TAG, "")
                lines.append(f"  {r.info.run_name} ({r.info.status}): {why}")
        sys.exit(f"{len(missing)} of {len(self.jobs)} cells did not finish:\n" + "\n".join(lines)
                 + f"\nRedo with: {command_line()}")
