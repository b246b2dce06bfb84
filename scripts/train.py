"""Train one configuration, or a sweep with -m; every run is tracked in MLflow.

    python scripts/train.py                                  # one run, the defaults
    python scripts/train.py -m experiment=paper_fmnist       # the paper's sweep
    python scripts/train.py -m dataset=digits pruning=magnitude pruning.amount=0,0.5 \
        pruning.epoch=1 trainer.epochs=3

A cell that already FINISHED is skipped and an interrupted one resumes (force=true: rerun).
In a sweep, a failing run is marked FAILED and the other cells go on; the command then lists
the failures and exits non-zero.
"""

import logging
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from emergence_lab.measure import keys as mk
from emergence_lab.run.config import register_configs
from emergence_lab.run.jobs import job_overrides, job_parent_run_id
from emergence_lab.run.pipeline import train

register_configs()
log = logging.getLogger(__name__)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    # Relative paths (data_dir, an embedded store, the sweep dir) mean the launching folder;
    # remote launchers such as Ray start jobs elsewhere.
    os.chdir(HydraConfig.get().runtime.cwd)
    try:
        metrics = train(cfg, parent_run_id=job_parent_run_id(), overrides=job_overrides())
    except Exception as exc:
        if HydraConfig.get().mode != RunMode.MULTIRUN or not hasattr(exc, "mlflow_run_id"):
            raise  # a single run, or a failure before any run existed: shown in full
        # The run is marked FAILED with its reason; the sweep goes on and reports it at the end.
        log.error("run %s failed: %s: %s", exc.mlflow_run_id, type(exc).__name__, exc)
        return None
    return metrics.get(mk.TEST_ACC)


if __name__ == "__main__":
    main()
