"""A sweep's jobs: the cells its command line leaves (a grid split by Hydra's basic sweeper),
composed, validated and planned before any run exists (the plans offered to the local launcher,
which hands each job its own); the launcher checks; and, inside a job, its parent run and its
overrides."""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from emergence_lab.config import Config, validate
from emergence_lab.config.code_version import code_state, git_commit
from emergence_lab.procs import stop_when_gone
from emergence_lab.run.plan import RunPlan, plan_of

log = logging.getLogger(__name__)


PARENT_FILE = "mlflow_parent_run.json"


JOBS_FILE = "sweep_jobs.json"  # on the parent run: every job's overrides, to list missing cells


class NotAGrid(ValueError):
    """Sweep arguments that are not a grid of discrete values (e.g. Optuna's interval())."""


def expand_sweep(args: list[str]) -> list[list[str]]:
    """The overrides of every job of the grid these arguments span, as Hydra's basic sweeper
    splits them (BasicSweeper.split_arguments: the cartesian product, the first argument
    varying slowest; a key given twice, an experiment's ``hydra.sweeper.params`` then the
    command line, is one axis at its first place with its last value)."""
    parsed = OverridesParser.create().parse_overrides(args)
    for o in parsed:
        if o.is_sweep_override() and not o.is_discrete_sweep():
            raise NotAGrid(f"{o.input_line} is a search space, not a list of values")
    return [list(job) for job in _basic_sweeper().split_arguments(parsed, None)[0]]


def _basic_sweeper() -> type:
    """Hydra's basic sweeper, the class its config (hydra/sweeper=basic) names, found the way
    Hydra finds it (its plugins registered, the target resolved), not by its private module."""
    Plugins.instance()  # Hydra's core plugins register their configs in the ConfigStore
    return get_class(ConfigStore.instance().load("hydra/sweeper/basic.yaml").node["_target_"])


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


def plan_sweep(jobs: list[tuple[list[str], DictConfig]], checked: list[Config]) -> list[RunPlan]:
    """Every job's frozen plan, from its composed and checked config; the code's commit and
    state read once for all."""
    commit, state = git_commit(), code_state()
    return [plan_of(cfg, c, overrides, commit=commit, state=state)
            for (overrides, cfg), c in zip(jobs, checked, strict=True)]


_offered: dict[tuple[str, ...], RunPlan] = {}  # the plans of this sweep's jobs, for its launcher


def offer(plans: list[RunPlan]) -> None:
    """The sweep's plans (checked, preflighted, with their parent run) for the local launcher
    to hand each job (run.plan.hand)."""
    _offered.clear()
    _offered.update({tuple(sorted(p.overrides)): p for p in plans})


def offered(overrides: list[str]) -> RunPlan | None:
    """The plan offered for a job of these overrides, None for none."""
    return _offered.get(tuple(sorted(overrides)))


POOL_LAUNCHER = "emergence_lab_launcher.processes.ProcessLauncher"  # hydra/launcher=processes


def check_launcher(launcher: DictConfig, jobs: list[Config] = ()) -> None:
    """Launcher settings that would fail only once jobs start; the sweep's own settings
    (sweep.*) one for all its jobs, and what the launcher can honour."""
    if len({(j.sweep.dry_run, j.sweep.max_failures) for j in jobs}) > 1:
        raise ValueError("sweep.dry_run and sweep.max_failures must be the same for every job "
                         "of a sweep (they say how the sweep goes, not what a cell is)")
    pool = str(launcher.get("_target_", "")).endswith(POOL_LAUNCHER)
    if jobs and jobs[0].sweep.max_failures is not None and not pool:
        raise ValueError(f"sweep.max_failures={jobs[0].sweep.max_failures} is honoured by "
                         f"hydra/launcher=local (the project's process pool), not by "
                         f"{launcher.get('_target_')}; drop it or use hydra/launcher=local")
    check = getattr(_launcher_class(launcher), "check", None)
    if jobs and check is not None:  # the launcher's own (SLURM: the cluster can run the jobs)
        check(launcher)
    n_jobs = launcher.get("n_jobs", 1)
    if n_jobs is not None and (not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1):
        raise ValueError(f"hydra.launcher.n_jobs={n_jobs}: the number of parallel jobs must be "
                         f"a positive integer (or -1: one per CPU), e.g. hydra.launcher.n_jobs=2")


def _launcher_class(launcher: DictConfig) -> type | None:
    """The launcher's class (Hydra's plugin scan has imported it), None where it cannot be
    found (Hydra itself then says so)."""
    try:
        return get_class(str(launcher.get("_target_", "")))
    except Exception:
        return None


def jobs_run_here(launcher: DictConfig) -> bool:
    """Whether the launcher runs jobs on this machine (so its devices are theirs): not SLURM,
    not a Ray cluster joined by address. A launcher class may say so itself (jobs_run_here)."""
    said = getattr(_launcher_class(launcher), "jobs_run_here", None)
    if isinstance(said, bool):
        return said
    target = str(launcher.get("_target_", ""))
    address = OmegaConf.select(launcher, "ray.init.address", default=None)
    return "submitit" not in target and not ("ray" in target.lower() and address)


def planned_epochs(sweep_dir: Path, job_overrides: list[list[str]]) -> list[int | None]:
    """Each job's epochs, from the jobs file the sweep callback wrote (None where unknown)."""
    try:
        jobs = json.loads((sweep_dir / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return [None] * len(job_overrides)
    by_overrides = {tuple(sorted(j["overrides"])): j.get("epochs") for j in jobs}
    return [by_overrides.get(tuple(sorted(o))) for o in job_overrides]


def command_line() -> str:
    """The command line that started this process: rerunning a sweep's resumes it (finished
    cells are skipped, interrupted ones resumed, failed ones run again)."""
    python = os.path.relpath(sys.executable)
    return shlex.join([sys.executable if python.startswith("..") else python, *sys.argv])


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
