"""The per-epoch callback of a run: log metrics and measurements, advance the progress bar, write
checkpoints, and stop once emergence has stayed low (trainer.stop_epsilon)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from emergence_lab.config import Config
from emergence_lab.config.identity import (
    run_name,
)
from emergence_lab.measure import keys, record
from emergence_lab.measure.formula import stop_epoch
from emergence_lab.run import events
from emergence_lab.run.checkpoint import (
    save_checkpoint,
)
from emergence_lab.store import records

log = logging.getLogger(__name__)


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics alone (an epoch's measurement rides with them under keys.MEASUREMENT)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}


class EpochLogger:
    """The per-epoch callback: log metrics, advance the progress bar, write checkpoints and,
    when armed, stop once emergence has stayed at or below trainer.stop_epsilon."""

    def __init__(self, run: records.Run, c: Config, model: nn.Module,
                 opt: torch.optim.Optimizer, workdir: Path):
        self.run, self.c, self.model, self.opt, self.workdir = run, c, model, opt, workdir
        self.bar = tqdm(total=c.trainer.epochs, desc=run_name(c), unit="epoch",
                        disable=None if c.tracking.progress else True, leave=False)
        self.best_acc = -1.0
        self.last: dict[str, float] = {}
        self.emergence: list[tuple[int, float]] = []  # (epoch, E) since the stopper was armed
        self.stopper_armed = False
        self.pruning_steps = 0  # pruning steps applied to the network, saved with checkpoints
        self.rewind: dict[str, Any] | None = None  # the state a reset rewinds to, saved with them

    def __call__(self, epoch: int, metrics: dict[str, Any], checkpoint: str = "all",
                 loaded: bool = False) -> bool:
        """Log one epoch and store its measurement; checkpoint "all" (last.pt, best.pt when
        best), "last" or "none"; `loaded`: the epoch comes from the shared pre-prune state."""
        self.run.check_owner()  # never log into a run another process has taken over
        if keys.MEASUREMENT in metrics:
            self.store_measurement(metrics[keys.MEASUREMENT], epoch)
        metrics = numbers(metrics)
        self.run.log_metrics(metrics, step=epoch)
        if keys.TRAIN_LOSS in metrics:  # a training epoch of the run's own data set
            self.last = metrics
            events.emit("epoch", epoch=epoch, loaded=loaded)
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{metrics['train/loss']:.3f}",
                                 acc=f"{metrics['test/acc']:.3f}")
            log.info("%s epoch %d: train/loss %.4f test/acc %.4f E %.4g", run_name(self.c),
                     epoch, metrics[keys.TRAIN_LOSS], metrics[keys.TEST_ACC], metrics[keys.E])
        elif epoch == 0:
            self.last = metrics
        if checkpoint != "none" and self.c.trainer.checkpoints:
            self.checkpoint(epoch, metrics[keys.TEST_ACC], best=checkpoint == "all")
        return self._should_stop(epoch, metrics)

    def _should_stop(self, epoch: int, metrics: dict[str, float]) -> bool:
        eps = self.c.trainer.stop_epsilon
        if not self.stopper_armed or eps is None:
            return False
        self.emergence.append((epoch, metrics[keys.E]))
        fired = stop_epoch(self.emergence, eps, self.c.trainer.stop_patience)
        if fired is not None:
            self.run.set_tags({"stopped_early_at": fired})
            log.info("%s: E <= %g for %d epochs, stopping at epoch %d", run_name(self.c), eps,
                     self.c.trainer.stop_patience, fired)
        return fired is not None

    def store_measurement(self, state: dict[str, Any], epoch: int, phase: str = "epoch") -> None:
        """The measurement E is recomputed from under any setting (measure.record)."""
        path = self.workdir / record.file_name(epoch, phase)
        torch.save(state, path)
        self.run.log_artifact(path, record.FOLDER)
        path.unlink()

    def checkpoint(self, epoch: int, acc: float, best: bool = True) -> None:
        """Log last.pt (what a resumed run starts from), and best.pt when acc is the best so far
        of the network as it ends up (epochs before its last pruning step never count)."""
        last = self.workdir / "last.pt"
        extra = {"rewind": self.rewind} if self.rewind is not None else {}
        save_checkpoint(last, self.model, self.opt, epoch=epoch, test_acc=acc,
                        pruning_steps=self.pruning_steps, **extra)
        self.run.log_artifact(last, "checkpoints")
        if best and acc > self.best_acc:
            self.best_acc = acc
            shutil.copyfile(last, self.workdir / "best.pt")  # the same bytes: not serialized twice
            self.run.log_artifact(self.workdir / "best.pt", "checkpoints")

    def close(self) -> None:
        self.bar.close()
