"""The loss landscape in a run: the `landscape` config group (an analysis setting, never part of
a run's identity), the epochs it measures (by default the pruning epoch, the one after it and
the last), and measure once: the weights at those epochs are kept with the run
(`landscape/weights_epoch_XXXX.pt`), so that a landscape-only sweep over finished cells adds
the series without training (`add_landscape`)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emergence_lab.config.groups import LandscapeConfig
from emergence_lab.data import TensorData
from emergence_lab.measure.landscape import MEASURES, measure_landscape
from emergence_lab.store import artifacts, digests, records

log = logging.getLogger(__name__)

FOLDER = "landscape"  # the run's artifact folder: weights and planes by epoch


def default_epochs(prune_epoch: int, last: int) -> list[int]:
    """The pruning epoch (0: the initialization, where nothing is pruned), the one after, the
    last."""
    return sorted({prune_epoch, prune_epoch + 1, last} & set(range(last + 1)))


def epochs_of(c: Any) -> list[int]:
    """The epochs a run measures its landscape at (and keeps its weights at)."""
    if c.landscape.epochs is not None:
        return sorted(set(c.landscape.epochs))
    from emergence_lab.prune.base import STRATEGIES

    prunes = STRATEGIES[c.pruning.name].prunes
    return default_epochs(c.pruning.epoch if prunes else 0, c.trainer.epochs)


def probe_batch(data: TensorData, lc: LandscapeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of the training set (inputs and labels)."""
    g = torch.Generator().manual_seed(lc.seed)
    idx = torch.randperm(data.x_train.shape[0], generator=g)[:lc.probe_size].to(data.x_train.device)
    return data.x_train[idx], data.y_train[idx]


def _name(kind: str, epoch: int, suffix: str) -> str:
    return f"{kind}_epoch_{epoch:04d}.{suffix}"


def measure(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], lc: LandscapeConfig
            ) -> tuple[dict[str, float], dict | None]:
    """(metrics, plane) of the model as it is; its train/eval mode is left as it was."""
    mode = model.training
    try:
        got = measure_landscape(model, *batch, lc.measures, lc)
    finally:
        model.train(mode)
    return got.metrics, got.plane


class LandscapeHook:
    """A callback of the run's epochs (loop.Epoch): at the landscape's epochs, keep the weights
    and log the measures (at that step) and the plane (an artifact). `at(epoch)` does it for
    the network as it is, outside the loop (the state before the first pruning step)."""

    def __init__(self, c: Any, model: nn.Module, data: TensorData, run: records.Run,
                 workdir: Path, code: str = ""):
        self.c, self.model, self.run, self.workdir = c, model, run, workdir
        self.lc: LandscapeConfig = c.landscape
        self.epochs = set(epochs_of(c)) if self.lc.measures or self.lc.keep_weights else set()
        self.batch = probe_batch(data, self.lc) if self.lc.measures and self.epochs else None
        self.done: set[int] = set()
        # the kept weights are read back by a landscape-only sweep: their digests recorded
        self.files = digests.RunFiles(run.client.tracking_uri, run.run_id, FOLDER, code) \
            if self.lc.keep_weights and self.epochs else None

    def __call__(self, e: Any) -> None:
        if e.phase == "epoch":
            self.at(e.epoch)

    def at(self, epoch: int) -> None:
        if epoch not in self.epochs or epoch in self.done:
            return
        self.done.add(epoch)
        if self.lc.keep_weights:
            self._artifact(_name("weights", epoch, "pt"), lambda p: torch.save(
                {"model": self.model.state_dict()}, p))
        if self.lc.measures:
            metrics, plane = measure(self.model, self.batch, self.lc)
            self.run.log_metrics(metrics, step=epoch)
            if plane is not None:
                self._artifact(_name("plane", epoch, "json"), lambda p: p.write_text(
                    json.dumps(plane)))

    def _artifact(self, name: str, write) -> None:
        path = self.workdir / name
        write(path)
        if self.files is not None and name.startswith("weights"):
            self.files.record(path)  # first: a run killed between the two has no file unrecorded
        self.run.log_artifact(path, FOLDER)
        path.unlink()


def _lacking(uri: str, run_id: str, lc: LandscapeConfig, epochs: list[int]) -> list[int]:
    """The epochs at which the run lacks one of the configured measures' series."""
    wanted = lc.metric_keys() or []
    have = {k: {s for s, _ in records.metric_history(uri, run_id, k)} for k in wanted}
    gives_plane = any(MEASURES[m].plane for m in lc.measures)
    planes = set(artifacts.artifact_names(uri, run_id, FOLDER)) if gives_plane else set()
    return [e for e in epochs if any(e not in steps for steps in have.values())
            or (gives_plane and _name("plane", e, "json") not in planes)]


def add_landscape(c: Any, run: Any, data: TensorData, build: Any) -> str:
    """A FINISHED run: log the landscape series it lacks from the weights it kept; "present",
    "added" or "unweighted" (weights not kept at some epoch: only retraining can measure it,
    force=true). `build()` gives a fresh network of the run's config to load them into."""
    lc, uri, run_id = c.landscape, c.tracking.uri, run.info.run_id
    if not lc.measures:
        return "present"
    todo = _lacking(uri, run_id, lc, epochs_of(c))
    if not todo:
        return "present"
    kept = set(artifacts.artifact_names(uri, run_id, FOLDER))
    if any(_name("weights", e, "pt") not in kept for e in todo):
        return "unweighted"
    from emergence_lab.run.checkpoint import restore_state

    batch = probe_batch(data, lc)
    series: dict[str, list[tuple[int, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:  # every file checked before anything is logged
        names = [_name("weights", e, "pt") for e in todo]
        paths = [artifacts.download_artifact(uri, run_id, f"{FOLDER}/{n}", tmp) for n in names]
        digests.check_run_files(run, FOLDER, paths[0].parent, names)
        for e, path in zip(todo, paths, strict=True):
            model = build()
            restore_state(torch.load(path, map_location=data.x_train.device, weights_only=True),
                          model)
            metrics, plane = measure(model, batch, lc)
            for k, v in metrics.items():
                series.setdefault(k, []).append((e, v))
            if plane is not None:
                artifacts.log_json(uri, run_id, plane, f"{FOLDER}/{_name('plane', e, 'json')}")
    records.log_series(uri, run_id, series)
    return "added"
