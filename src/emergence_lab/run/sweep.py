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

import atexit
import dataclasses
import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from emergence_lab.data import check_available
from emergence_lab.measure import keys as mk
from emergence_lab.procs import forward_signal, stop_when_gone
from emergence_lab.run.config import Config, validate
from emergence_lab.run.identity import config_hash, stable_hash
from emergence_lab.run.preflight import preflight
from emergence_lab.store import artifacts, connection, ledger, sweeps

log = logging.getLogger(__name__)
PARENT_FILE = "mlflow_parent_run.json"
SIGNAL_GRACE_S = 30.0  # how long an interrupted launcher waits for its workers' runs to end
JOBS_FILE = "sweep_jobs.json"  # on the parent run: every job's overrides, to list missing cells


class NotAGrid(ValueError):
    """Sweep arguments that are not a grid of discrete values (e.g. Optuna's interval())."""


def expand_sweep(args: list[str]) -> list[list[str]]:
    """The overrides of every job of the grid these arguments span, in the order of Hydra's
    basic sweeper (the cartesian product, the first argument varying slowest). A key given twice
    (an experiment's ``hydra.sweeper.params``, then the command line) is one axis at its first
    place with its last value, as Hydra's sweeper has it: ``trainer.seed=0`` narrows the seeds."""
    axes: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides(args):
        key = o.get_key_element()
        if not o.is_sweep_override():
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            raise NotAGrid(f"{o.input_line} is a search space, not a list of values")
    return [list(job) for job in itertools.product(*axes.values())]


def _is_grid(config: DictConfig) -> bool:
    """Whether the sweeper runs every job of its arguments' grid (Hydra's basic sweeper); other
    sweepers (Optuna, Nevergrad, Ax) choose their jobs from the arguments as they go."""
    return str(config.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper")


def sweep_job_configs(config: DictConfig) -> list[tuple[list[str], DictConfig]]:
    """(overrides, composed config) of every job of a grid sweep; for a search, the one job of
    its fixed overrides (with each choice's first value), checked before any job runs."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    args = params + list(config.hydra.overrides.task)
    if _is_grid(config):
        jobs = expand_sweep(args)
    else:
        parsed = OverridesParser.create().parse_overrides(args)
        jobs = [[f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
                 if o.is_discrete_sweep() else o.input_line for o in parsed
                 if not o.is_sweep_override() or o.is_discrete_sweep()]]
    loader = GlobalHydra.instance().config_loader()
    composed: dict[tuple[str, ...], DictConfig] = {}
    out = []
    for job in jobs:
        structure, values = _split(job)
        if structure not in composed:  # Hydra composes each distinct choice of options once
            base = loader.load_sweep_config(config, list(structure))
            with read_write(base), open_dict(base):
                del base["hydra"]  # as Hydra does before it calls the task function
            composed[structure] = base
        job_cfg = _with_values(composed[structure], values)
        if job_cfg is None:  # a value Hydra must judge (a new key, a bad type): compose it
            job_cfg = loader.load_sweep_config(config, job)
            with read_write(job_cfg), open_dict(job_cfg):
                del job_cfg["hydra"]
        out.append((job, job_cfg))
    return out


def _split(job: list[str]) -> tuple[tuple[str, ...], list[tuple[str, Any]]]:
    """A job's overrides as (what changes the composition: option choices, additions,
    deletions, hydra.*; key=value assignments to config fields with their parsed values)."""
    structure, values = [], []
    for o in OverridesParser.create().parse_overrides(job):
        key = o.key_or_group
        plain = not (o.is_add() or o.is_delete() or o.is_force_add() or o.package)
        if plain and "." in key and not key.startswith("hydra.") and not o.is_sweep_override():
            values.append((key, o.value()))
        else:
            structure.append(o.input_line)
    return tuple(structure), values


def _with_values(base: DictConfig, values: list[tuple[str, Any]]) -> DictConfig | None:
    """A copy of a composed config with the assignments made (what Hydra's composition would
    give: command-line values apply last), or None where one needs Hydra's own judgement."""
    cfg = base.copy()
    try:
        for key, value in values:
            if OmegaConf.select(cfg, key, throw_on_missing=False, default=_ABSENT) is _ABSENT:
                return None
            OmegaConf.update(cfg, key, value, merge=False)
    except Exception:  # a type the schema refuses: Hydra's message, from a full composition
        return None
    return cfg


_ABSENT = object()


def validate_sweep(jobs: list[tuple[list[str], DictConfig]]) -> list[Config]:
    """Every job's checked config; the first bad one raises, naming the job's overrides."""
    checked = []
    for overrides, job_cfg in jobs:
        try:
            checked.append(validate(job_cfg))
        except ValueError as exc:
            raise ValueError(f"{exc}\n  in the sweep job with overrides {overrides}") from None
    return checked


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
        self.interrupted = False
        self.grid = True  # the jobs are known up front (else a search: see sweep_job_configs)
        self.stale_after_s: float | None = None  # the jobs' tracking.stale_after_s

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning and launches the jobs anyway;
        # SystemExit passes through it, so a bad sweep stops here, before any run exists.
        try:
            self._start(config)
        except Exception as exc:
            sys.exit(f"Sweep not started: {exc}")

    def _start(self, config: DictConfig) -> None:
        self.grid = _is_grid(config)
        composed = sweep_job_configs(config)
        jobs = validate_sweep(composed)
        first = jobs[0].tracking
        if any((j.tracking.uri, j.tracking.experiment) != (first.uri, first.experiment)
               for j in jobs):
            raise ValueError("all jobs of a sweep must share tracking.uri and tracking.experiment")
        check_launcher(config.hydra.launcher)
        connection.check_reachable(first.uri)
        self.jobs = [{"overrides": sorted(o), "config_hash": config_hash(j)}
                     for (o, _), j in zip(composed, jobs, strict=True)] if self.grid else []
        # every cell finished (one store query): nothing will run, so nothing to preflight
        done = self._all_finished(jobs) if self.grid else None
        local = jobs_run_here(config.hydra.launcher)
        for (overrides, _), job in zip(composed, jobs, strict=True) if done is None else ():
            try:
                preflight(job, device=local)
            except ValueError as exc:
                raise ValueError(f"{exc}\n  in the sweep job with overrides {overrides}") from None
        for dataset in {json.dumps(dataclasses.asdict(d), sort_keys=True): d for j in jobs
                        for d in (j.dataset, j.pretrain.dataset) if d is not None}.values():
            if done is None:
                check_available(dataset)
        # a grid is identified by its cells; a search by its arguments and its sweep dir
        sweep_hash = stable_hash(sorted(j["config_hash"] for j in self.jobs)) if self.grid else \
            stable_hash([str(config.hydra.sweep.dir), list(config.hydra.overrides.task)])
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        self.uri = first.uri
        self.stale_after_s = first.stale_after_s
        self.run_id = sweeps.open_sweep(
            first.uri, first.experiment, f"{first.experiment}-{sweep_dir.name}", sweep_hash,
            {"sweep_dir": str(sweep_dir), "jobs": str(len(jobs)),
             "overrides": " ".join(config.hydra.overrides.task)[:5000]})
        artifacts.log_json(first.uri, self.run_id, self.jobs, JOBS_FILE)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(json.dumps({
            "run_id": self.run_id, "uri": first.uri, "launcher_pid": os.getpid(),
            "launcher_host": socket.gethostname()}))
        # A job that raises aborts the sweeper before on_multirun_end: end the parent anyway.
        atexit.register(self._end_if_open)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if done is not None:  # nothing to train or measure: no job is launched
            sweeps.end_sweep(first.uri, self.run_id, "FINISHED")
            self.run_id = None
            print(f"{done} of {done} cells already finished (force=true reruns them): the report "
                  f"of this sweep is make report (scripts/report.py --tracking-uri {first.uri})",
                  flush=True)
            sys.exit(0)
        log.info("sweep of %d jobs: MLflow parent run %s in %s", len(jobs), self.run_id, first.uri)

    def _all_finished(self, jobs: list[Config]) -> int | None:
        """The number of cells when every one already has a FINISHED run holding its
        threshold setting's series (one store query): then nothing needs a job; else None."""
        if any(j.force for j in jobs):
            return None
        first = jobs[0].tracking
        finished = sweeps.finished_cells(first.uri, first.experiment)
        hashes = {j["config_hash"] for j in self.jobs}
        for job in jobs:
            run = finished.get(config_hash(job))
            wanted = [mk.setting_keys(job.threshold.setting().with_counting(k))[0]
                      for k in ("units", "edges")]
            if run is None or any(k not in run.data.metrics for k in wanted):
                return None
        return len(hashes)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.interrupted = True  # the parent ends KILLED, like its runs
        # `kill` or a scheduler signals the launcher alone: the workers training this sweep's
        # runs get the signal too, and the launcher waits (a while) for them to mark the runs
        # KILLED before its pool is torn down
        owners = ledger.running_owners(self.uri, self.run_id)
        pids = [pid for o in owners.values() if (pid := ledger.local_pid(o)) is not None]
        sent = forward_signal(signum, pids)
        log.warning("%s: stopping the sweep (forwarded to workers %s)",
                    signal.Signals(signum).name, sent)
        deadline = time.monotonic() + SIGNAL_GRACE_S
        while sent and time.monotonic() < deadline and set(owners) & set(
                ledger.running_owners(self.uri, self.run_id)):
            time.sleep(0.3)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def _end_if_open(self) -> None:
        if not self.run_id:
            return
        sweeps.end_sweep(self.uri, self.run_id, "KILLED" if self.interrupted else "FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.run_id:
            return
        runs = sweeps.sweep_runs(self.uri, self.run_id, [j["config_hash"] for j in self.jobs])
        if not self.grid:  # a search: every job that made a run is one of its cells
            self.jobs = [{"overrides": [r.data.tags.get("overrides", "")],
                          "config_hash": r.data.tags.get("config_hash")} for r in runs]
        cells = {r.data.tags.get("config_hash") for r in runs if r.info.status == "FINISHED"}
        missing = [j for j in self.jobs if j["config_hash"] not in cells]
        latest = {r.data.tags.get("config_hash"): r for r in runs}  # sweep_runs: oldest first
        elsewhere = {h: owner for h, r in latest.items() if h not in cells
                     for alive, owner in [ledger.owner_alive(r, self.stale_after_s)] if alive}
        if not missing:
            sweeps.end_sweep(self.uri, self.run_id, "FINISHED")
            return
        if len(elsewhere) == len(missing):  # all in the hands of other live processes
            log.warning("%d cells are being trained by other processes and were left to them:"
                        "\n%s", len(missing), "\n".join(
                            f"  {latest[h].info.run_name} (run {latest[h].info.run_id}): {o}"
                            for h, o in elsewhere.items()))
            return  # the parent stays RUNNING until a sweep finishes them
        sweeps.end_sweep(self.uri, self.run_id, "FAILED")
        lines = []
        for j in missing:
            r = latest.get(j["config_hash"])
            if r is None:
                lines.append(f"  not finished: {' '.join(j['overrides'])}")
            elif j["config_hash"] in elsewhere:
                lines.append(f"  {r.info.run_name}: being trained by {elsewhere[j['config_hash']]}")
            else:
                lines.append(f"  {r.info.run_name} ({r.info.status}): {r.data.tags.get('error', '')}")
        sys.exit(f"{len(missing)} of {len(self.jobs)} cells did not finish:\n" + "\n".join(lines))


def check_launcher(launcher: DictConfig) -> None:
    """Launcher settings that would fail only once jobs start."""
    n_jobs = launcher.get("n_jobs", 1)
    if n_jobs is not None and (not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1):
        raise ValueError(f"hydra.launcher.n_jobs={n_jobs}: the number of parallel jobs must be "
                         f"a positive integer (or -1: one per CPU), e.g. hydra.launcher.n_jobs=2")


def jobs_run_here(launcher: DictConfig) -> bool:
    """Whether the launcher runs jobs on this machine (so its devices are theirs): not SLURM,
    not a Ray cluster joined by address."""
    target = str(launcher.get("_target_", ""))
    address = OmegaConf.select(launcher, "ray.init.address", default=None)
    return "submitit" not in target and not ("ray" in target.lower() and address)


def job_parent_run_id() -> str | None:
    """Inside a Hydra multirun job: the sweep's parent run id; None for a single run. A job in
    a worker process of this machine also starts watching its launcher, and stops (its run
    KILLED) when the launcher dies."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    path = Path(str(hc.sweep.dir)).resolve() / PARENT_FILE
    if not path.is_file():
        return None
    parent = json.loads(path.read_text())
    if parent.get("launcher_host") == socket.gethostname() and parent.get("launcher_pid"):
        stop_when_gone(int(parent["launcher_pid"]))
    return parent["run_id"]


def job_overrides() -> list[str]:
    """The command-line overrides of the current Hydra job."""
    if not HydraConfig.initialized():
        return []
    return list(OmegaConf.to_container(HydraConfig.get().overrides.task))
