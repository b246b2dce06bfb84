"""The callbacks a run hands each epoch to (`loop.fit`), one concern each, all with one
signature: `callback(epoch: loop.Epoch) -> bool | None` (True stops training). `standard`
gives a run's list, in the order they run: guard the run's ownership, store the measurement,
log the metrics and the best accuracy so far, show progress, write checkpoints, stop early;
`Last` keeps the numbers the run returns."""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from emergence_lab.config import Config
from emergence_lab.config.identity import run_name
from emergence_lab.console import escape_codes
from emergence_lab.measure import keys, record
from emergence_lab.measure.formula import stop_epoch
from emergence_lab.run import events
from emergence_lab.run.checkpoint import save_checkpoint
from emergence_lab.run.loop import Callback, Epoch
from emergence_lab.store import digests, records

log = logging.getLogger(__name__)


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics alone (an epoch's measurement rides with them under keys.MEASUREMENT)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}


def trained(e: Epoch) -> bool:
    """A training epoch of the run's own data set (not epoch 0, pretraining or a pruning step)."""
    return e.phase == "epoch" and keys.TRAIN_LOSS in e.metrics


class OwnerCheck:
    """Never log into a run another process has taken over (raises LeaseLost); else beat."""

    def __init__(self, run: records.Run):
        self.run = run

    def __call__(self, e: Epoch) -> None:
        self.run.check_owner()


class Measurements:
    """Store the epoch's measurement, what E is recomputed from under any setting
    (measure.record), as an artifact of the run."""

    def __init__(self, run: records.Run, workdir: Path, code: str = ""):
        self.run, self.workdir = run, workdir
        # read back under other settings: each file's digest recorded with the run
        self.files = digests.RunFiles(run.client.tracking_uri, run.run_id, record.FOLDER, code)

    def __call__(self, e: Epoch) -> None:
        if keys.MEASUREMENT in e.metrics:
            path = self.workdir / record.file_name(e.epoch, e.phase)
            torch.save(e.metrics[keys.MEASUREMENT], path)
            self.files.record(path)  # first: a run killed between the two has no file unrecorded
            self.run.log_artifact(path, record.FOLDER)
            path.unlink()


class Metrics:
    """Log the epoch's metrics at its step."""

    def __init__(self, run: records.Run):
        self.run = run

    def __call__(self, e: Epoch) -> None:
        self.run.log_metrics(numbers(e.metrics), step=e.epoch)


class BestSoFar:
    """test/acc_best (and val/acc_best with a validation split): the running maximum of
    test/acc over the trained epochs of the network the run ends with (after its last pruning
    step), logged at each of them."""

    def __init__(self, run: records.Run):
        self.run = run
        # a resumed run goes on from the best it had logged
        self.best = {k: max(v for _, v in records.metric_history(run.client.tracking_uri,
                                                                 run.run_id, k))
                     for k in keys.BEST.values() if k in run.logged}

    def __call__(self, e: Epoch) -> None:
        if e.phase != "epoch" or e.checkpoint != "all" or e.loaded:
            return
        for key, best in keys.BEST.items():
            if key in e.metrics:
                self.best[best] = max(self.best.get(best, -1.0), e.metrics[key])
        if self.best:
            self.run.log_metrics(self.best, step=e.epoch)


class Last:
    """The numbers of the last epoch of the run's own data (what the run returns)."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def __call__(self, e: Epoch) -> None:
        if trained(e) or (e.phase == "epoch" and e.epoch == 0):
            self.metrics = numbers(e.metrics)


class Progress:
    """A progress bar (on a terminal, tracking.progress), an `epoch` event for the sweep's
    launcher, and a log line per trained epoch."""

    def __init__(self, c: Config):
        self.name = run_name(c)
        self.bar = tqdm(total=c.trainer.epochs, desc=self.name, unit="epoch",
                        disable=not (c.tracking.progress and escape_codes(sys.stderr)),
                        leave=False)

    def __call__(self, e: Epoch) -> None:
        if not trained(e):
            return
        m = e.metrics
        events.emit("epoch", epoch=e.epoch, loaded=e.loaded)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{m[keys.TRAIN_LOSS]:.3f}", acc=f"{m[keys.TEST_ACC]:.3f}")
        log.info("%s epoch %d: train/loss %.4f test/acc %.4f E %.4g", self.name, e.epoch,
                 m[keys.TRAIN_LOSS], m[keys.TEST_ACC], m[keys.E])

    def close(self) -> None:
        self.bar.close()


class Checkpoints:
    """last.pt (what a resumed run starts from) when the epoch asks for a checkpoint, and
    best.pt when it asks for all and its accuracy is the best so far of the network as it ends
    up (epochs before its last pruning step never ask)."""

    ACCURACY = {"epoch": keys.TEST_ACC, "pruned": keys.TEST_ACC_AFTER}  # by phase

    def __init__(self, run: records.Run, workdir: Path):
        self.run, self.workdir = run, workdir
        self.best_acc = -1.0

    def __call__(self, e: Epoch) -> None:
        if e.checkpoint is None:
            return
        acc = e.metrics[self.ACCURACY[e.phase]]
        last = self.workdir / "last.pt"
        extra = {"rewind": e.branch.rewind} if e.branch.rewind is not None else {}
        save_checkpoint(last, e.model, e.opt, epoch=e.epoch, test_acc=acc,
                        pruning_steps=e.branch.pruning_steps, **extra)
        self.run.log_artifact(last, "checkpoints")
        if e.checkpoint == "all" and acc > self.best_acc:
            self.best_acc = acc
            shutil.copyfile(last, self.workdir / "best.pt")  # the same bytes: not serialized twice
            self.run.log_artifact(self.workdir / "best.pt", "checkpoints")


class EarlyStop:
    """Once the network is final, stop when E has stayed at or below trainer.stop_epsilon for
    trainer.stop_patience epochs (tag stopped_early_at)."""

    def __init__(self, run: records.Run, c: Config):
        self.run, self.name = run, run_name(c)
        self.eps, self.patience = c.trainer.stop_epsilon, c.trainer.stop_patience
        self.emergence: list[tuple[int, float]] = []  # (epoch, E) since the network is final

    def __call__(self, e: Epoch) -> bool:
        if not e.branch.final or e.phase != "epoch":
            return False
        self.emergence.append((e.epoch, e.metrics[keys.E]))
        fired = stop_epoch(self.emergence, self.eps, self.patience)
        if fired is not None:
            self.run.set_tags({"stopped_early_at": fired})
            log.info("%s: E <= %g for %d epochs, stopping at epoch %d", self.name, self.eps,
                     self.patience, fired)
        return fired is not None


def standard(run: records.Run, c: Config, workdir: Path, code: str = "") -> list[Callback]:
    """A run's callbacks, in order; checkpoints with trainer.checkpoints, early stopping with
    trainer.stop_epsilon. `code`: the code version (what its stored files record)."""
    out: list[Callback] = [OwnerCheck(run), Measurements(run, workdir, code), Metrics(run),
                           BestSoFar(run), Progress(c)]
    if c.trainer.checkpoints:
        out.append(Checkpoints(run, workdir))
    if c.trainer.stop_epsilon is not None:
        out.append(EarlyStop(run, c))
    return out


def close(callbacks: Iterable[Callback]) -> None:
    """Close the callbacks that hold something open (a progress bar)."""
    for callback in callbacks:
        if hasattr(callback, "close"):
            callback.close()
