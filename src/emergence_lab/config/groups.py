"""The fixed config groups' schemas (threshold, trainer, tracking, pretrain, landscape): one
dataclass each, registered by `schema.register_configs` as `schema/<group>/base`, their range
checks in `__post_init__`. The options of the pluggable groups (model, dataset, pruning, init)
bring their own settings from their registries."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from emergence_lab.measure.landscape import MEASURES, LandscapeSettings
from emergence_lab.measure.setting import Setting
from emergence_lab.registry import check as _check
from emergence_lab.store.connection import check_scheme

# trainer.precision: the dtype its steps autocast to (None: fp32, no autocast)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CHOICES = ("auto", "true", "false")  # of trainer.compile and trainer.channels_last


def _one_of(field_name: str, value: Any, choices: Any) -> None:
    _check(value in choices, f"{field_name} must be one of {sorted(choices)}, got {value!r}")


@dataclass
class ThresholdConfig(Setting):
    """How E is read (an analysis setting, never part of a run's identity unless the emergence
    stopper reads it): the fields and checks of `measure.setting.Setting` (the activity rule,
    its θ, the route counting, the counted layers) and a θ grid. Every run logs the paper's
    setting as emergence/E and this one under its own keys (measure.keys); `grid` also logs the
    mean and fraction rules at more θ."""

    grid: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.05, 0.1])  # also logged

    def __post_init__(self) -> None:
        super().__post_init__()  # names the bad rule, counting, θ or layer with the valid choices
        for t in self.grid:
            _check(math.isfinite(t) and t >= 0,
                   f"threshold.grid values must be finite and >= 0, got {list(self.grid)}")


@dataclass
class TrainerConfig:
    epochs: int = 20
    lr: float = 0.005
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 64
    eval_batch_size: int = 1024
    seed: int = 0
    device: str = "auto"  # auto = cuda when available, else cpu
    # torch CPU threads; 0 = torch's default (the launcher's share of the CPUs), and a job
    # computing a shared prefix borrows the threads of siblings waiting for it
    num_threads: int = 0
    checkpoints: bool = True  # log last and best checkpoints as artifacts
    stop_epsilon: float | None = None  # stop once E <= stop_epsilon for stop_patience epochs
    stop_patience: int = 3
    lr_after_prune: float | None = None  # the lr from the first pruning step on (null: lr)
    # How the steps execute (run/execution.py): torch.compile (auto: conv nets over enough
    # steps), channels-last memory (auto: conv nets), and mixed precision (fp16: CUDA only)
    compile: str = "auto"
    channels_last: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"trainer.epochs must be >= 1, got {self.epochs}")
        for f in dataclasses.fields(self):  # first: NaN would fail the range checks below
            value = getattr(self, f.name)
            _check(not isinstance(value, float) or math.isfinite(value),
                   f"trainer.{f.name} must be a finite number, got {value}")
        _check(self.lr > 0, f"trainer.lr must be > 0, got {self.lr}")
        _check(0 <= self.momentum < 1, f"trainer.momentum must be in [0, 1), got {self.momentum}")
        _check(self.weight_decay >= 0,
               f"trainer.weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.batch_size >= 1, f"trainer.batch_size must be >= 1, got {self.batch_size}")
        _check(self.eval_batch_size >= 1,
               f"trainer.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        _check(self.num_threads >= 0, f"trainer.num_threads must be >= 0, got {self.num_threads}")
        _check(self.stop_epsilon is None or self.stop_epsilon >= 0,
               f"trainer.stop_epsilon must be >= 0 or null, got {self.stop_epsilon}")
        _check(self.lr_after_prune is None or self.lr_after_prune > 0,
               f"trainer.lr_after_prune must be > 0 or null, got {self.lr_after_prune}")
        _check(self.stop_patience >= 1,
               f"trainer.stop_patience must be >= 1, got {self.stop_patience}")
        for knob in ("compile", "channels_last"):  # true/false arrive as "True"/"False"
            setattr(self, knob, str(getattr(self, knob)).lower())
            _one_of(f"trainer.{knob}", getattr(self, knob), CHOICES)
        _one_of("trainer.precision", self.precision, PRECISIONS)
        _check(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
               f"trainer.device must be one of auto, cpu, cuda, cuda:N, mps; got {self.device!r}")


@dataclass
class PretrainConfig:
    epochs: int = 0  # train this many epochs on `dataset` first (0: no pretraining)
    dataset: Any = None  # a data set's settings (pretrain=mnist)

    def __post_init__(self) -> None:
        _check(self.epochs >= 0, f"pretrain.epochs must be >= 0, got {self.epochs}")
        _check(self.epochs == 0 or self.dataset is not None,
               "pretrain.dataset must be set when pretrain.epochs > 0 (pretrain=mnist)")


NAME_MAX_BYTES = 200  # a folder name's limit (255 on common file systems), less the suffixes we add


def check_folder_name(field_name: str, name: str) -> None:
    """A name that becomes a folder (the experiment's artifacts, its report): one usable name
    inside its parent folder. ValueError saying which rule it breaks."""
    _check(bool(name), f"{field_name} must not be empty")
    _check(not any(c in name for c in "/\\") and name not in (".", ".."),
           f"{field_name}={name!r} must be one folder name inside the store: no / or \\, not . or ..")
    _check(not name.startswith("."), f"{field_name}={name!r} must not start with '.' (a hidden folder)")
    _check(name.isprintable(), f"{field_name}={name!r} must not hold control characters")
    size = len(name.encode())
    _check(size <= NAME_MAX_BYTES, f"{field_name} is {size} bytes long; a folder name here may be "
                                   f"at most {NAME_MAX_BYTES} (the file system allows 255, less the "
                                   f"report folder's suffix)")


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"  # or http://host:port for a tracking server
    experiment: str = "emergence"
    cache_dir: str | None = None  # shared pre-prune states; default: next to the store
    progress: bool = True  # progress bar per run (on a terminal)
    on_taken: str = "wait"  # a cell another live process trains: wait for it, or skip it
    heartbeat_s: float = 30.0  # how often a run's owner says it is alive
    stale_after_s: float = 300.0  # an owner silent this long (or a dead local pid) is dead
    # a run that finishes no epoch this long is stalled: noted on the sweep's status line at a
    # quarter of it; at it, its launcher ends it KILLED (resumable) and a sweep waiting on it
    # takes it over (null: never)
    stall_after_s: float | None = 3600.0
    system_metrics: bool = False  # MLflow's system metrics (CPU, memory, disk; GPU) per run
    log_model: bool = False  # the final network as an MLflow logged model (mlflow.pytorch)

    def __post_init__(self) -> None:
        check_scheme(self.uri)
        check_folder_name("tracking.experiment", self.experiment)
        _one_of("tracking.on_taken", self.on_taken, ("wait", "skip"))
        _check(self.heartbeat_s > 0, f"tracking.heartbeat_s must be > 0, got {self.heartbeat_s}")
        _check(self.stale_after_s > 2 * self.heartbeat_s,
               f"tracking.stale_after_s must exceed 2 * tracking.heartbeat_s "
               f"({2 * self.heartbeat_s:g}), got {self.stale_after_s}")
        _check(self.stall_after_s is None or self.stall_after_s > 0,
               f"tracking.stall_after_s must be > 0 seconds (or null: never), got "
               f"{self.stall_after_s}")


@dataclass
class LandscapeConfig(LandscapeSettings):
    """What is measured (measure.landscape.MEASURES: curvature, slices, plane), at which epochs
    (None: the pruning epoch, the one after it and the last), on how many training samples
    (probe_size, a seeded subset), how (the measures' settings, LandscapeSettings) and whether
    the weights at those epochs are kept (what a later landscape sweep measures without
    training)."""

    name: str = "none"
    measures: list[str] = field(default_factory=list)
    epochs: list[int] | None = None
    probe_size: int = field(default=512, metadata={"min": 1})
    keep_weights: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for m in self.measures:
            _check(m in MEASURES, f"landscape.measures must be among {sorted(MEASURES.names())}, "
                                 f"got {m!r}")
        _check(all(e >= 0 for e in self.epochs or []),
              f"landscape.epochs must be >= 0, got {self.epochs}")

    def metric_keys(self) -> list[str]:
        return [k for m in self.measures for k in MEASURES[m].keys]


@dataclass
class SweepConfig:
    """How a sweep goes (never part of a run's identity): `dry_run` says what it would do and
    does nothing; after `max_failures` failed cells no new cell starts (null: never stop)."""

    dry_run: bool = False  # list every cell's state and the estimated time; train and write nothing
    max_failures: int | None = None  # after this many failed cells no new cell starts (null: never)

    def __post_init__(self) -> None:
        _check(self.max_failures is None or self.max_failures >= 1,
               f"sweep.max_failures must be >= 1 or null, got {self.max_failures}")
