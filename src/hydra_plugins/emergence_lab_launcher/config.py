"""The config of `hydra/launcher=processes` (as Hydra's launcher plugins keep theirs: a
dataclass in the ConfigStore, found by Hydra's plugin scan)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class ProcessLauncherConf:
    _target_: str = "hydra_plugins.emergence_lab_launcher.processes.ProcessLauncher"
    n_jobs: int = 2  # jobs at once (-1: one per CPU)
    stop_timeout_s: float = 4.0  # after a signal, how long a job gets to close its run
    fork_server: bool = True  # its workers fork from emergence_lab's fork server (started early)


ConfigStore.instance().store(group="hydra/launcher", name="processes", node=ProcessLauncherConf,
                             provider="emergence_lab")
