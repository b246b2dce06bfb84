"""Train one configuration, or a sweep with -m; every run is tracked in MLflow.

    python scripts/train.py                                  # one run, the defaults
    python scripts/train.py -m experiment=paper_fmnist       # the paper's sweep
    python scripts/train.py -m dataset=digits pruning=magnitude pruning.amount=0,0.5 \
        pruning.epoch=1 trainer.epochs=3
"""

import hydra
from omegaconf import DictConfig

from emergence_lab.config import register_configs
from emergence_lab.sweep import job_overrides, job_parent_run_id
from emergence_lab.train import train

register_configs()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    metrics = train(cfg, parent_run_id=job_parent_run_id(), overrides=job_overrides())
    return metrics["test/acc"]


if __name__ == "__main__":
    main()
