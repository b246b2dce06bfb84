"""Hydra's own launcher test suites against the project's launcher (`hydra/launcher=processes`),
as every Hydra launcher plugin runs them: the launcher suite, the batched-sweeper suite and the
integration suite (hydra.test_utils.launcher_common_tests)."""

from __future__ import annotations

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)

from hydra_plugins.emergence_lab_launcher.processes import ProcessLauncher

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _hydra_as_a_fresh_process_has_it():
    """The suites assume Hydra's version base unset, as in a process of their own (then a job
    runs in its output folder); the project's tests that ran before in this process set it to
    1.3 (hydra.job.chdir false)."""
    from hydra.version import _UNSPECIFIED_, VersionBase

    base = VersionBase.instance()
    saved, base.version_base = base.version_base, _UNSPECIFIED_
    yield
    base.version_base = saved


@pytest.fixture(autouse=True, scope="module")
def _no_fork_server_left():
    """The launcher's fork server (started with this process's thread settings) goes with the
    suites, so that later tests in this process start their own."""
    yield
    from emergence_lab.sweep.worker import stop_server

    stop_server()


def test_discovery() -> None:
    assert ProcessLauncher.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize("launcher_name, overrides", [("processes", [])])
class TestProcessLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides",
                         [("processes", ["hydra.sweeper.max_batch_size=2"])])
class TestProcessLauncherBatched(BatchedSweeperTestSuite):
    pass


@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [(
    {"defaults": [{"override hydra/launcher": "processes"},
                  {"override hydra/hydra_logging": "hydra_debug"},
                  {"override hydra/job_logging": "disabled"}]},
    ["-m"])])
class TestProcessLauncherIntegration(IntegrationTestSuite):
    pass
