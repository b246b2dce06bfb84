"""Structured config: one dataclass schema per group, registered in Hydra's ConfigStore.

A typo in a key or a wrong type fails when Hydra composes the config; range and cross-field
checks run in `__post_init__`, called by `validate` (OmegaConf.to_object) before any run exists.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from emergence_lab.data import LOADERS
from emergence_lab.emergence import ACTIVITY_MODES
from emergence_lab.models import INITS, MODELS, UNIT_LAYER_KINDS
from emergence_lab.pruning import SCOPES, STRATEGIES


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _one_of(field_name: str, value: Any, choices: Any) -> None:
    _check(value in choices, f"{field_name} must be one of {sorted(choices)}, got {value!r}")


@dataclass
class MLPConfig:
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [512, 256])

    def __post_init__(self) -> None:
        _one_of("model.name", self.name, MODELS)
        _check(len(self.hidden) > 0, "model.hidden must list at least one width, got []")
        for w in self.hidden:
            _check(w > 0, f"model.hidden widths must be > 0, got {list(self.hidden)}")

    @property
    def hidden_layers(self) -> int:
        """How many hidden unit layers the model has (what emergence counts by default)."""
        return len(self.hidden)


@dataclass
class CNNConfig:
    name: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64])  # filters per conv block
    hidden: list[int] = field(default_factory=lambda: [128])  # fully connected widths
    kernel_size: int = 3
    pool: int = 2

    def __post_init__(self) -> None:
        _one_of("model.name", self.name, MODELS)
        _check(len(self.channels) > 0, "model.channels must list at least one conv block, got []")
        for field_name, widths in (("channels", self.channels), ("hidden", self.hidden)):
            for w in widths:
                _check(w > 0, f"model.{field_name} widths must be > 0, got {list(widths)}")
        _check(self.kernel_size >= 1, f"model.kernel_size must be >= 1, got {self.kernel_size}")
        _check(self.pool >= 1, f"model.pool must be >= 1, got {self.pool}")

    @property
    def hidden_layers(self) -> int:
        """Conv blocks (filters are units) plus hidden linear layers."""
        return len(self.channels) + len(self.hidden)


@dataclass
class DatasetConfig:
    name: str = MISSING
    data_dir: str = "data"
    sources: list[str] = field(default_factory=list)  # local dirs searched before downloading
    download: bool = True
    probe_size: int = 2048  # emergence probe: fixed, seeded subset of the training set
    probe_seed: int = 0
    test_fraction: float = 0.2  # data sets without an official test split (digits)
    split_seed: int = 0
    root: str | None = None  # image_folder: a tree with train/<class>/ and test/<class>/
    image_size: int = 32  # image_folder: images are resized to image_size x image_size
    channels: int = 3  # image_folder: 3 (RGB) or 1 (grey)
    normalize: bool = False  # standardize each input channel with the training set's mean and std

    def __post_init__(self) -> None:
        _one_of("dataset.name", self.name, LOADERS)
        _check(self.probe_size > 0, f"dataset.probe_size must be > 0, got {self.probe_size}")
        _check(0 < self.test_fraction < 1,
               f"dataset.test_fraction must be in (0, 1), got {self.test_fraction}")
        _one_of("dataset.channels", self.channels, (1, 3))
        _check(self.image_size >= 1, f"dataset.image_size must be >= 1, got {self.image_size}")
        _check(self.name != "image_folder" or bool(self.root),
               "dataset.root must name an image folder (train/<class>/, test/<class>/) "
               "with dataset=image_folder")


@dataclass
class PruningConfig:
    name: str = "none"
    amount: float = 0.0  # fraction of weights removed, in [0, 1)
    epoch: int = 0  # prune after this many epochs
    scope: str = "global"  # global | layerwise
    steps: int = 1  # iterative pruning: reach `amount` in this many steps ...
    interval: int = 1  # ... this many epochs apart

    def __post_init__(self) -> None:
        _one_of("pruning.name", self.name, STRATEGIES)
        _one_of("pruning.scope", self.scope, SCOPES)
        _check(0 <= self.amount < 1, f"pruning.amount must be in [0, 1), got {self.amount}")
        _check(self.name != "none" or self.amount == 0,
               f"pruning.amount must be 0 with pruning=none, got {self.amount}")
        _check(self.epoch >= 0, f"pruning.epoch must be >= 0, got {self.epoch}")
        _check(self.steps >= 1, f"pruning.steps must be >= 1, got {self.steps}")
        _check(self.interval >= 1, f"pruning.interval must be >= 1, got {self.interval}")
        _check(self.name != "structured" or self.scope == "layerwise",
               f"pruning.scope must be layerwise with pruning=structured (units are removed "
               f"per layer), got {self.scope!r}")


@dataclass
class ThresholdConfig:
    theta: float = 0.05  # a unit is active when its activation exceeds theta
    mode: str = "mean"  # mean: mean over the probe set > theta; fraction: see min_fraction
    min_fraction: float = 0.5  # mode=fraction: active on more than this share of probe samples
    layers: list[str] = field(default_factory=lambda: ["hidden"])  # input, hidden, output
    grid: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.05, 0.1])  # also logged

    def __post_init__(self) -> None:
        _check(self.theta >= 0, f"threshold.theta must be >= 0, got {self.theta}")
        for t in self.grid:
            _check(t >= 0, f"threshold.grid values must be >= 0, got {list(self.grid)}")
        _one_of("threshold.mode", self.mode, ACTIVITY_MODES)
        _check(0 <= self.min_fraction < 1,
               f"threshold.min_fraction must be in [0, 1), got {self.min_fraction}")
        for kind in self.layers:
            _one_of("threshold.layers entries", kind, UNIT_LAYER_KINDS)


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

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"trainer.epochs must be >= 1, got {self.epochs}")
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
        _check(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
               f"trainer.device must be one of auto, cpu, cuda, cuda:N, mps; got {self.device!r}")


@dataclass
class InitConfig:
    name: str = "standard"  # standard | emergence (arXiv 2407.19044)
    alpha: float = 1.0  # emergence: weights of the layer d steps from the middle scaled by alpha^±d

    def __post_init__(self) -> None:
        _one_of("init.name", self.name, INITS)
        _check(math.isfinite(self.alpha) and self.alpha >= 1,
               f"init.alpha must be finite and >= 1 (1 = standard), got {self.alpha}")


@dataclass
class PretrainConfig:
    epochs: int = 0  # train this many epochs on `dataset` first (0: no pretraining)
    dataset: DatasetConfig | None = None

    def __post_init__(self) -> None:
        _check(self.epochs >= 0, f"pretrain.epochs must be >= 0, got {self.epochs}")
        _check(self.epochs == 0 or self.dataset is not None,
               "pretrain.dataset must be set when pretrain.epochs > 0 (pretrain=mnist)")


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"  # or http://host:port for a tracking server
    experiment: str = "emergence"
    cache_dir: str | None = None  # shared pre-prune states; default: next to the store
    progress: bool = True  # progress bar per run (on a terminal)
    on_taken: str = "wait"  # a cell another live process trains: wait for it, or skip it
    heartbeat_s: float = 30.0  # how often a run's owner says it is alive
    stale_after_s: float = 300.0  # an owner silent this long (or a dead local pid) is dead

    def __post_init__(self) -> None:
        _check(not self.uri.startswith("file:"),
               f"tracking.uri={self.uri}: MLflow 3.13+ refuses the file store; use an SQLite "
               f"file, e.g. tracking.uri=sqlite:///mlruns/mlflow.db, or a server's http:// URI")
        _check(re.match(r"(sqlite|https?|postgresql|mysql)[:+]", self.uri) is not None,
               f"tracking.uri must start with sqlite:, http(s):, postgresql: or mysql:, "
               f"got {self.uri!r}")
        _check(bool(self.experiment), "tracking.experiment must not be empty")
        _one_of("tracking.on_taken", self.on_taken, ("wait", "skip"))
        _check(self.heartbeat_s > 0, f"tracking.heartbeat_s must be > 0, got {self.heartbeat_s}")
        _check(self.stale_after_s > 2 * self.heartbeat_s,
               f"tracking.stale_after_s must exceed 2 * tracking.heartbeat_s "
               f"({2 * self.heartbeat_s:g}), got {self.stale_after_s}")


@dataclass
class Config:
    model: Any = MISSING
    dataset: DatasetConfig = MISSING
    pruning: PruningConfig = field(default_factory=PruningConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    init: InitConfig = field(default_factory=InitConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    force: bool = False  # rerun as a new run even if this configuration has a FINISHED run

    def __post_init__(self) -> None:
        layers = self.threshold.layers
        counted = (self.model.hidden_layers if "hidden" in layers else 0) + len(
            set(layers) & {"input", "output"})
        _check(counted >= 2, f"emergence needs at least 2 counted layers: threshold.layers={list(layers)} "
               f"counts {counted} of this model; add hidden widths or 'output' to threshold.layers")
        _check(self.pruning.name != "none" or self.trainer.lr_after_prune is None,
               f"trainer.lr_after_prune ({self.trainer.lr_after_prune}) needs a pruning step: "
               f"pruning=none never reaches one; set pruning (amount 0 for a control) or drop it")
        if self.pruning.name != "none":
            # a network pruned after the last epoch is never trained nor measured as the
            # run's final one: its row would describe the unpruned network
            _check(self.pruning.epoch < self.trainer.epochs,
                   f"pruning.epoch must be < trainer.epochs ({self.trainer.epochs}), "
                   f"got {self.pruning.epoch}: prune earlier or train longer")
            last = self.pruning.epoch + (self.pruning.steps - 1) * self.pruning.interval
            _check(last < self.trainer.epochs,
                   f"the last pruning step falls at epoch {last} (pruning.epoch + (steps - 1) * "
                   f"interval), not before trainer.epochs ({self.trainer.epochs})")


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; each YAML option extends its group's base_*."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="model", name="base_mlp", node=MLPConfig)
    cs.store(group="model", name="base_cnn", node=CNNConfig)
    cs.store(group="dataset", name="base_dataset", node=DatasetConfig)
    cs.store(group="pruning", name="base_pruning", node=PruningConfig)
    cs.store(group="threshold", name="base_threshold", node=ThresholdConfig)
    cs.store(group="trainer", name="base_trainer", node=TrainerConfig)
    cs.store(group="tracking", name="base_tracking", node=TrackingConfig)
    cs.store(group="init", name="base_init", node=InitConfig)
    cs.store(group="pretrain", name="base_pretrain", node=PretrainConfig)


def validate(cfg: DictConfig) -> Config:
    """The typed, checked config; raises ValueError naming the field, value and valid range."""
    try:
        obj = OmegaConf.to_object(cfg)
    except Exception as exc:  # OmegaConf wraps __post_init__ errors; surface the message
        cause = exc.__cause__ if isinstance(exc.__cause__, ValueError) else None
        raise ValueError(str(cause) if cause else str(exc)) from exc
    if not isinstance(obj, Config):
        raise ValueError("config does not extend base_config; add it to the defaults list")
    _reject_unknown_keys(cfg, obj)
    return obj


def _reject_unknown_keys(cfg: DictConfig, obj: Config) -> None:
    """Keys added with `+group.key=...` that no schema declares (to_object drops them)."""
    for f in dataclasses.fields(obj):
        schema = getattr(obj, f.name)
        if not dataclasses.is_dataclass(schema):
            continue
        known = {g.name for g in dataclasses.fields(schema)}
        extra = sorted(set(cfg[f.name].keys()) - known)
        if extra:
            raise ValueError(f"unknown key {f.name}.{extra[0]}; valid keys of {f.name}: {sorted(known)}")
