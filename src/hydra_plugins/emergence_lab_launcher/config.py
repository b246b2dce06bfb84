"""The configs of `hydra/launcher=processes` and `hydra/launcher=slurm_jobs` (as Hydra's
launcher plugins keep theirs: dataclasses in the ConfigStore, found by Hydra's plugin scan)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class ProcessLauncherConf:
    _target_: str = "hydra_plugins.emergence_lab_launcher.processes.ProcessLauncher"
    n_jobs: int = 2  # jobs at once (-1: one per CPU)
    stop_timeout_s: float = 4.0  # after a signal, how long a job gets to close its run
    fork_server: bool = True  # its workers fork from emergence_lab's fork server (started early)


ConfigStore.instance().store(group="hydra/launcher", name="processes", node=ProcessLauncherConf,
                             provider="emergence_lab")


@dataclass
class SlurmLauncherConf(SlurmQueueConf):
    """`hydra/launcher=slurm_jobs`: Hydra's submitit launcher for SLURM (every field of
    hydra-submitit-launcher's submitit_slurm) that keeps the local launcher's contract: a job
    the scheduler ends fails or interrupts its own cell only, a signal cancels the sweep's jobs,
    a vanished job is noticed, and an impossible request is refused before any run exists."""

    _target_: str = "hydra_plugins.emergence_lab_launcher.slurm.SlurmLauncher"
    poll_s: float = 5.0  # how often the submitter reads the jobs' states and events
    vanished_after_s: float = 60.0  # a job gone from the queue with no result, or a scheduler
    #   that does not answer, for this long: its cell ends FAILED (accounting or not)
    stop_timeout_s: float = 30.0  # after a signal, how long cancelled jobs get to close their runs


ConfigStore.instance().store(group="hydra/launcher", name="slurm_jobs", node=SlurmLauncherConf,
                             provider="emergence_lab")
