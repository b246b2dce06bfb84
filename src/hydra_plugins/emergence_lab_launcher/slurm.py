"""`hydra/launcher=slurm_jobs`: Hydra's submitit launcher for SLURM, keeping the local
launcher's contract. A thin class, as `processes.py` is: the submitter's side (submission, the
watch over the jobs, cancelling them on a signal) is `emergence_lab.sweep.slurm`, imported when
the sweep launches; the job's side is `__call__`, run by submitit on a node."""

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)
from omegaconf import DictConfig

OWN = ("poll_s", "vanished_after_s", "stop_timeout_s")  # this launcher's fields, not submitit's


class SlurmLauncher(SubmititSlurmLauncher):
    jobs_run_here = False  # on the cluster's nodes: the sweep checks no device of this machine

    def __init__(self, **params: Any) -> None:
        self.own = {k: params.pop(k) for k in OWN if k in params}
        super().__init__(**params)

    @staticmethod
    def check(launcher: DictConfig) -> None:
        """Before any run exists (the sweep's callback calls it): the jobs' request is one the
        cluster can satisfy, or a ValueError with the scheduler's reason."""
        from emergence_lab.sweep.slurm import check_request

        check_request(launcher, OWN)

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict[type, Any]) -> JobReturn:
        from emergence_lab.sweep.slurm import job_side

        with job_side(sweep_overrides):
            try:
                return super().__call__(sweep_overrides, job_dir_key, job_num, job_id,
                                        singleton_state)
            except KeyboardInterrupt:  # its run has ended KILLED (resumable); the job ends
                return JobReturn(overrides=sweep_overrides, status=JobStatus.COMPLETED)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
               ) -> Sequence[JobReturn]:
        from emergence_lab.sweep.slurm import launch

        return launch(self, [list(o) for o in job_overrides], initial_job_idx)
