"""`hydra/launcher=processes`: the sweep's jobs on a pool of local worker processes that a
signal stops cleanly and a dead worker does not take down. A thin class, as Hydra's own launcher
plugins are: its config is `config.py`, its core (`emergence_lab.sweep.launcher`) is imported
when it launches. Imported by Hydra's plugin scan at every start: nothing heavy at module level."""

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


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
        from emergence_lab.sweep.launcher import launch

        return launch(self, [list(o) for o in job_overrides], initial_job_idx)
