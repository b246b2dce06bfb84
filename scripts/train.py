"""Train one configuration, or a sweep with -m; every run is tracked in MLflow.

    python scripts/train.py                                  # one run, the defaults
    python scripts/train.py -m experiment=paper_fmnist       # the paper's sweep
    python scripts/train.py -m dataset=digits pruning=magnitude pruning.amount=0,0.5 \
        pruning.epoch=1 trainer.epochs=3

A cell that already FINISHED is skipped and an interrupted one resumes (force=true: rerun).
In a sweep, a failing run is marked FAILED and the other cells go on; the command then lists
the failures and exits non-zero.
"""
# ruff: noqa: E402  (the imports after procs.quiet_while_loading take seconds)

from emergence_lab import procs

procs.quiet_while_loading("train", "nothing was started")  # Ctrl-C during the imports below

import logging
import os
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from emergence_lab.config import register_configs
from emergence_lab.errors import fail, one_line
from emergence_lab.measure import keys as mk
from emergence_lab.run.pipeline import train
from emergence_lab.sweep.jobs import job_overrides, job_parent_run_id

register_configs()
log = logging.getLogger(__name__)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    # Relative paths (data_dir, an embedded store, the sweep dir) mean the launching folder;
    # remote launchers such as Ray start jobs elsewhere.
    os.chdir(HydraConfig.get().runtime.cwd)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = train(cfg, parent_run_id=job_parent_run_id(), overrides=job_overrides())
    except KeyboardInterrupt as exc:
        if multirun:
            raise  # the launcher's worker ends the job
        fail(f"interrupted ({exc}): the run is KILLED with its finished epochs kept; rerun the "
             f"same command to resume it", 130)
    except Exception as exc:
        run_id = getattr(exc, "mlflow_run_id", None)
        if multirun and run_id:  # marked FAILED with its reason; the sweep goes on and lists it
            log.error("run %s failed: %s: %s", run_id, type(exc).__name__, exc)
            return None
        if multirun:
            raise  # a failure before any run existed: the sweep stops on it
        fail(single_run_error(exc, run_id, str(cfg.tracking.uri)))
    return metrics.get(mk.TEST_ACC)


def single_run_error(exc: Exception, run_id: str | None, uri: str) -> str:
    """One line for a single run's failure; an unexpected one leaves its traceback in the
    run's output folder."""
    where = f"run {run_id} FAILED: " if run_id else ""
    line = f"error: {where}{one_line(exc, uri)}"
    if not isinstance(exc, (ValueError, OSError, FloatingPointError)):
        path = Path(HydraConfig.get().runtime.output_dir) / "error.log"
        path.write_text(traceback.format_exc())
        line += f" (traceback: {path})"
    return line


if __name__ == "__main__":
    procs.loaded()  # from here the sweep's and the run's own handlers
    procs.run_and_exit(main)  # without the interpreter's teardown: seconds with torch loaded
