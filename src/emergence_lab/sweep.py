"""Hydra multirun glue: check every job's config up front, and one MLflow parent run per sweep.

The callback runs in the launching process, before any job: it composes and validates every
job's config (a bad value fails the sweep before a run exists), creates the store and the
experiment (parallel jobs never race on schema creation) and the parent run, whose id it leaves
in the sweep dir for the jobs.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from emergence_lab import tracking
from emergence_lab.config import Config, validate

log = logging.getLogger(__name__)
PARENT_FILE = "mlflow_parent_run.json"
JOBS_FILE = "sweep_jobs.json"  # on the parent run: every job's overrides, to list missing cells


def expand_sweep(args: list[str]) -> list[list[str]]:
    """The overrides of every job Hydra's basic sweeper makes of these arguments."""
    parsed = OverridesParser.create().parse_overrides(args)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None)
            for job in batch]


def sweep_job_configs(config: DictConfig) -> list[tuple[list[str], DictConfig]]:
    """(overrides, composed config) of every job the basic sweeper will launch."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    loader = GlobalHydra.instance().config_loader()
    jobs = []
    for job in expand_sweep(params + list(config.hydra.overrides.task)):
        job_cfg = loader.load_sweep_config(config, job)
        with read_write(job_cfg), open_dict(job_cfg):
            del job_cfg["hydra"]  # as Hydra does before it calls the task function
        jobs.append((job, job_cfg))
    return jobs


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
    """Validates the whole sweep and brackets it with an MLflow parent run."""

    def __init__(self) -> None:
        self.uri: str | None = None
        self.run_id: str | None = None
        self.jobs: list[tuple[list[str], DictConfig]] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning and launches the jobs anyway;
        # SystemExit passes through it, so a bad sweep stops here, before any run exists.
        try:
            self._start(config)
        except Exception as exc:
            sys.exit(f"Sweep not started: {exc}")

    def _start(self, config: DictConfig) -> None:
        self.jobs = sweep_job_configs(config)
        jobs = validate_sweep(self.jobs)
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        first = jobs[0].tracking
        if any((j.tracking.uri, j.tracking.experiment) != (first.uri, first.experiment)
               for j in jobs):
            raise ValueError("all jobs of a sweep must share tracking.uri and tracking.experiment")
        self.uri = first.uri
        self.run_id = tracking.start_sweep(
            first.uri, first.experiment, f"{first.experiment}-{sweep_dir.name}",
            {"sweep_dir": str(sweep_dir), "jobs": str(len(jobs)),
             "overrides": " ".join(config.hydra.overrides.task)[:5000]})
        tracking.log_json(first.uri, self.run_id, [sorted(o) for o, _ in self.jobs], JOBS_FILE)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(json.dumps({"run_id": self.run_id, "uri": first.uri}))
        # A job that fails aborts the sweeper before on_multirun_end: end the parent anyway.
        atexit.register(tracking.end_sweep, first.uri, self.run_id, "FAILED")
        log.info("sweep of %d jobs: MLflow parent run %s in %s", len(jobs), self.run_id, first.uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id:
            tracking.end_sweep(self.uri, self.run_id, "FINISHED")


def job_parent_run_id() -> str | None:
    """Inside a Hydra multirun job: the sweep's parent run id; None for a single run."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    path = Path(str(hc.sweep.dir)).resolve() / PARENT_FILE
    return json.loads(path.read_text())["run_id"] if path.is_file() else None


def job_overrides() -> list[str]:
    """The command-line overrides of the current Hydra job."""
    if not HydraConfig.initialized():
        return []
    return list(OmegaConf.to_container(HydraConfig.get().overrides.task))
