"""`hydra/launcher=processes`: the sweep's jobs on a pool of local worker processes that a
signal stops cleanly and a dead worker does not take down (emergence_lab.run.launcher).
Imported by Hydra's plugin scan at every start: nothing heavy at module level."""


from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class ProcessLauncherConf:
    _target_: str = "hydra_plugins.emergence_lab_launcher.processes.ProcessLauncher"
    n_jobs: int = 2  # jobs at once (-1: one per CPU)
    stop_timeout_s: float = 4.0  # after a signal, how long a job gets to close its run
    fork_server: bool = True  # its workers fork from emergence_lab's fork server (started early)


ConfigStore.instance().store(group="hydra/launcher", name="processes", node=ProcessLauncherConf,
                             provider="emergence_lab")


class ProcessLauncher(Launcher):
    def __init__(self, n_jobs: int = 2, stop_timeout_s: float = 4.0,
                 fork_server: bool = True) -> None:
        self.n_jobs, self.stop_timeout_s = n_jobs, stop_timeout_s
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
               ) -> Sequence[JobReturn]:
        from emergence_lab.run.launcher import launch

        return launch(self, [list(o) for o in job_overrides], initial_job_idx)
