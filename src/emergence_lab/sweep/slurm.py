"""The SLURM launcher's core (`hydra/launcher=slurm_jobs`): Hydra's submitit launcher with the
local launcher's contract.

Submitter's side (`launch`): the sweep's jobs go to SLURM as one array (submitit), then a watch
reads, every `poll_s`, each job's result file, its events (what the job tells, written beside
its submitit files: `run.events`) and the queue (`squeue`, and `sacct` where accounting runs):

- a job that ends without a result (scancel, its wall time, preemption, a node that died, the
  OOM killer) ends its own cell only: its run KILLED (cancelled, out of time, preempted: the
  rerun resumes it) or FAILED (anything else), with the scheduler's reason; the others go on;
- a job gone from the queue with no result and no state from accounting, or a scheduler that
  does not answer, for `vanished_after_s`: its cell ends FAILED (no hang without `sacct`);
- a signal to the submitter cancels every job of the sweep (`scancel`), waits `stop_timeout_s`
  for their runs to end KILLED, ends what is left KILLED itself, and exits 128 + the signal
  with one line;
- the request is checked before any run exists (`check_request`: `sbatch --test-only`).

Job's side (`job_side`): SIGTERM (scancel) and SLURM's wall-time warning (SIGUSR2, sent
`signal_delay_s` before the kill) end the job's run KILLED, with its checkpoint kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from emergence_lab import procs
from emergence_lab.errors import fail
from emergence_lab.run import events
from emergence_lab.sweep import parent, stop
from emergence_lab.sweep.jobs import command_line, planned_epochs
from emergence_lab.sweep.status import Job, SweepStatus

log = logging.getLogger(__name__)

EVENTS = "{job_id}_events.jsonl"  # beside the job's submitit files
WALL_TIME_WARNING = "the job's wall time is near (SLURM's SIGUSR2, hydra.launcher.signal_delay_s)"



def _slurm(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str] | None:
    """A SLURM command's result; None when it cannot run (not found, hung)."""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def executor(params: dict[str, Any]) -> Any:
    """submitit's executor for these launcher fields, as hydra-submitit-launcher makes it."""
    import submitit

    params = dict(params)
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init["slurm_max_num_timeout"] = params.pop("max_num_timeout")
    ex = submitit.AutoExecutor(cluster="slurm", **init)
    base = submitit.AutoExecutor._valid_parameters()  # the executors' shared fields
    ex.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return ex


def _request(params: dict[str, Any]) -> str:
    keys = ("partition", "cpus_per_task", "mem_gb", "gpus_per_node", "timeout_min", "nodes")
    return ", ".join(f"{k}={params.get(k)}" for k in keys)


EARLY_BY_S = 60  # SLURM may send the --signal warning this much earlier than asked (man sbatch)


def _check_warning(timeout_min: Any, signal_delay_s: Any) -> None:
    """The wall-time warning (SIGUSR2, `signal_delay_s` before the wall time, and up to 60 s
    earlier: SLURM's event resolution) cannot reach a job as it starts, before it has trained
    an epoch; a ValueError otherwise."""
    if timeout_min is None or signal_delay_s is None:
        return
    if signal_delay_s + EARLY_BY_S >= timeout_min * 60:
        raise ValueError(
            f"hydra.launcher.signal_delay_s={signal_delay_s} with hydra.launcher.timeout_min="
            f"{timeout_min}: SLURM sends its wall-time warning (SIGUSR2) that long before the "
            f"wall time and up to {EARLY_BY_S} s earlier still (man sbatch, --signal), so it "
            f"could end each job as it starts; make timeout_min * 60 more than signal_delay_s "
            f"+ {EARLY_BY_S} (for example timeout_min={(signal_delay_s + EARLY_BY_S) // 60 + 1})")


def check_request(launcher: DictConfig, own: tuple[str, ...]) -> None:
    """The jobs' request is one the cluster can satisfy (`sbatch --test-only` of the script
    submitit would submit), or a ValueError with SLURM's reason and what the cluster offers.
    `own`: the launcher's fields that are not submitit's."""
    params = {k: v for k, v in OmegaConf.to_container(launcher, resolve=True).items()
              if k != "_target_" and k not in own}
    _check_warning(params.get("timeout_min"), params.get("signal_delay_s"))
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "check.sh"
        script.write_text(executor({**params, "submitit_folder": tmp})
                          ._executor._make_submission_file_text("true", "check"))
        result = _slurm("sbatch", "--test-only", str(script), timeout=60)
    if result is None:
        raise ValueError("hydra/launcher=slurm_jobs submits with SLURM's sbatch, which does not "
                         "run here: start the sweep on a machine of the cluster (a login node), "
                         "or use hydra/launcher=local")
    if result.returncode != 0:
        lines = [x for x in result.stderr.splitlines() if x.strip()] or ["(no reason given)"]
        reason = lines[-1].split("error: ", 1)[-1].strip()
        nodes = _slurm("sinfo", "-h", "-o", "%P cpus=%c mem=%mMB gres=%G time=%l")
        if nodes is None or nodes.returncode != 0:
            raise ValueError(f"SLURM does not answer from this machine ({reason}): start the "
                             f"sweep where sbatch and sinfo reach the cluster's controller "
                             f"(SLURM_CONF), or use hydra/launcher=local")
        offer = "; ".join(nodes.stdout.split("\n")).strip("; ")
        raise ValueError(f"SLURM refuses the sweep's jobs: {reason}. They ask for "
                         f"{_request(params)}; the cluster offers: {offer}. Change "
                         f"hydra.launcher.cpus_per_task, mem_gb, gpus_per_node, timeout_min or "
                         f"partition")


@contextlib.contextmanager
def job_side(overrides: list[str]) -> Iterator[None]:
    """Inside a SLURM job: its events go to a file the submitter reads, and SIGTERM (scancel)
    or the wall-time warning (SIGUSR2) stop its run KILLED (submitit's own handlers would
    end it FAILED, or ignore SIGTERM)."""
    import submitit

    env = submitit.JobEnvironment()
    path = env.paths.folder / EVENTS.format(job_id=env.job_id)

    def sink(event: dict[str, Any]) -> None:
        with path.open("a") as f:
            f.write(json.dumps(event) + "\n")

    events.set_sink(sink)
    procs.stop_on_signals(also={signal.SIGUSR2: WALL_TIME_WARNING})
    try:
        yield
    finally:
        events.set_sink(None)


class Scheduler:
    """What the watch asks SLURM (each None where the command fails or does not answer)."""

    @staticmethod
    def queue(array_id: str) -> dict[str, tuple[str, str]] | None:
        """job id (array task: 12_3) -> (state, reason) of the array's jobs in the queue."""
        result = _slurm("squeue", "-h", "-r", "-j", array_id, "-o", "%i|%T|%r")
        if result is None:
            return None
        if result.returncode != 0:  # an id the controller has forgotten: none in the queue
            return {} if "Invalid job id" in result.stderr else None
        rows = [line.split("|") for line in result.stdout.splitlines() if line.count("|") == 2]
        return {r[0]: (r[1], r[2]) for r in rows}

    @staticmethod
    def accounting(array_id: str) -> dict[str, str] | None:
        """job id -> its state in SLURM's accounting (sacct); None without accounting."""
        result = _slurm("sacct", "-n", "-X", "-P", "-j", array_id, "-o", "JobID,State")
        if result is None or result.returncode != 0:
            return None
        rows = [line.split("|") for line in result.stdout.splitlines() if line.count("|") == 1]
        return {r[0]: r[1] for r in rows}

    @staticmethod
    def cancel(array_id: str) -> None:
        _slurm("scancel", array_id)

    @staticmethod
    def log_tail(job: Any, lines: int = 6) -> list[str]:
        """The last lines of a job's error output (submitit's log)."""
        try:
            text = job.paths.stderr.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [x[:300] for x in text if x.strip()][-lines:]


def launch(launcher: Any, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
    """Submit the jobs as one SLURM array and watch them to the end (the module docstring);
    their JobReturns in order. After a signal, the sweep ends here: one line, exit 128 + it."""
    from hydra.core.singleton import Singleton

    from emergence_lab.sweep.slurm_watch import Watch

    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    state = Singleton.get_state()
    args = [(o, "hydra.sweep.dir", initial_job_idx + i, f"job_id_for_{initial_job_idx + i}", state)
            for i, o in enumerate(job_overrides)]
    try:
        jobs = executor(launcher.params).map_array(launcher, *zip(*args, strict=True))
    except Exception as exc:  # sbatch's refusal (submitit's FailedJobError), no sbatch
        parent.end("FAILED")
        text = str(exc).strip().splitlines()
        fail(f"Sweep not started: SLURM refused the submission: {text[-1] if text else exc}")
    log.info("submitted %d jobs as SLURM array %s; each job's output: %s", len(jobs),
             str(jobs[0].job_id).split("_")[0], jobs[0].paths.folder.parent / "<job>")
    status = SweepStatus([Job(o, e) for o, e in
                          zip(job_overrides, planned_epochs(sweep_dir, job_overrides), strict=True)])
    watch = Watch(jobs, job_overrides, status, launcher.own, Scheduler())
    watch.run()
    signum = stop.first()
    if signum is not None:
        parent.end("KILLED")
        print(status.stopped_line(signal.Signals(signum).name, command_line()), file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        os._exit(128 + signum)
    return [r if r is not None else JobReturn(overrides=o, status=JobStatus.COMPLETED)
            for r, o in zip(watch.returns, job_overrides, strict=True)]
