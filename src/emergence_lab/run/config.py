"""Structured config: one dataclass schema per group, registered in Hydra's ConfigStore.

The options of the pluggable groups (model, dataset, pruning, init) bring their own settings
dataclasses from their registries; each is stored as `schema/<group>/<name>`, and its YAML
extends it. A typo in a key or a wrong type fails when Hydra composes the config; range and
cross-field checks run in `__post_init__`, called by `validate` (OmegaConf.to_object) before
any run exists.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from emergence_lab.data import DATASETS, DatasetConfig
from emergence_lab.measure.setting import Setting
from emergence_lab.measure.stats import FRACTIONS
from emergence_lab.models import INITS, MODELS, InitConfig
from emergence_lab.prune.base import STRATEGIES, PruningConfig
from emergence_lab.registry import check as _check
from emergence_lab.registry import load_plugins
from emergence_lab.run.execution import CHOICES, PRECISIONS
from emergence_lab.run.landscape import LandscapeConfig
from emergence_lab.store.connection import check_scheme


def _one_of(field_name: str, value: Any, choices: Any) -> None:
    _check(value in choices, f"{field_name} must be one of {sorted(choices)}, got {value!r}")


@dataclass
class ThresholdConfig:
    """How E is read (an analysis setting, never part of a run's identity unless the emergence
    stopper reads it): the activity rule, its θ (τ for dormant), the route counting and the
    counted layers. Every run logs the paper's setting as emergence/E and this one under its
    own keys (measure.keys); `grid` also logs the mean and fraction rules at more θ."""

    rule: str = "mean"  # measure.rules.RULES: mean, fraction, dormant
    theta: float = 0.05  # θ (τ for rule=dormant): a unit is active when its statistic exceeds it
    counting: str = "units"  # measure.counting.COUNTINGS: units (the paper's), edges
    min_fraction: float = 0.5  # rule=fraction: active on more than this share of probe samples
    layers: list[str] = field(default_factory=lambda: ["hidden"])  # input, hidden, output
    grid: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.05, 0.1])  # also logged

    def __post_init__(self) -> None:
        self.setting()  # names the bad rule, counting, θ or layer with the valid choices
        _check(any(math.isclose(self.min_fraction, f) for f in FRACTIONS),
               f"threshold.min_fraction must be one of {list(FRACTIONS)} (the shares stored "
               f"per unit), got {self.min_fraction}")
        for t in self.grid:
            _check(math.isfinite(t) and t >= 0,
                   f"threshold.grid values must be finite and >= 0, got {list(self.grid)}")

    def setting(self) -> Setting:
        return Setting(self.rule, self.theta, self.counting, self.min_fraction,
                       tuple(self.layers))


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

    def __post_init__(self) -> None:
        check_scheme(self.uri)
        check_folder_name("tracking.experiment", self.experiment)
        _one_of("tracking.on_taken", self.on_taken, ("wait", "skip"))
        _check(self.heartbeat_s > 0, f"tracking.heartbeat_s must be > 0, got {self.heartbeat_s}")
        _check(self.stale_after_s > 2 * self.heartbeat_s,
               f"tracking.stale_after_s must exceed 2 * tracking.heartbeat_s "
               f"({2 * self.heartbeat_s:g}), got {self.stale_after_s}")


@dataclass
class Config:
    model: Any = MISSING  # the settings of a MODELS entry
    dataset: Any = MISSING  # the settings of a DATASETS entry
    pruning: Any = field(default_factory=PruningConfig)  # the settings of a STRATEGIES entry
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    init: Any = field(default_factory=InitConfig)  # the settings of an INITS entry
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)  # analysis, not identity
    force: bool = False  # rerun as a new run even if this configuration has a FINISHED run

    def __post_init__(self) -> None:
        for group, registry, settings in (
                ("model", MODELS, self.model), ("dataset", DATASETS, self.dataset),
                ("init", INITS, self.init), ("pretrain.dataset", DATASETS, self.pretrain.dataset)):
            if settings is not None:
                registry.entry_for(settings, group)
        strategy = STRATEGIES[self.pruning.name]
        strategy.check_settings(self.pruning)
        prunes = strategy.prunes
        _check(prunes or self.trainer.lr_after_prune is None,
               f"trainer.lr_after_prune ({self.trainer.lr_after_prune}) needs a pruning step: "
               f"pruning=none never reaches one; set pruning (amount 0 for a control) or drop it")
        if prunes:
            # a network pruned after the last epoch is never trained nor measured as the
            # run's final one: its row would describe the unpruned network
            _check(self.pruning.epoch < self.trainer.epochs,
                   f"pruning.epoch must be < trainer.epochs ({self.trainer.epochs}), "
                   f"got {self.pruning.epoch}: prune earlier or train longer")
            last = self.pruning.epoch + (self.pruning.steps - 1) * self.pruning.interval
            _check(last < self.trainer.epochs,
                   f"the last pruning step falls at epoch {last} (pruning.epoch + (steps - 1) * "
                   f"interval), not before trainer.epochs ({self.trainer.epochs})")


SCHEMA_GROUP = "schema"  # the schemas live apart, so that a group's choices are its options


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore under schema/<group>/: each option's settings as
    `schema/<group>/<name>`, which its YAML extends (`/schema/model/mlp@_here_` in its defaults
    list), and each group's common one as `schema/<group>/base`. Kept out of the option groups
    themselves, so that `model=nosuch` lists only real options. Plugin modules
    ($EMERGENCE_LAB_PLUGINS, entry points) are imported first, so their options are schemas too."""
    load_plugins()
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, registry in (("model", MODELS), ("dataset", DATASETS), ("pruning", STRATEGIES),
                            ("init", INITS)):
        for entry in registry:
            cs.store(group=f"{SCHEMA_GROUP}/{group}", name=entry.name, node=entry.settings)
    for group, node in (("dataset", DatasetConfig), ("pruning", PruningConfig),
                        ("init", InitConfig), ("threshold", ThresholdConfig),
                        ("trainer", TrainerConfig), ("tracking", TrackingConfig),
                        ("pretrain", PretrainConfig), ("landscape", LandscapeConfig)):
        cs.store(group=f"{SCHEMA_GROUP}/{group}", name="base", node=node)


def _leaves(node: Any, path: str = "") -> Any:
    """(dotted path, key, value) of every entry of a plain container, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in items:
        where = f"{path}.{key}" if path and isinstance(key, str) else \
            f"{path}[{key}]" if path else str(key)
        yield where, key, value
        yield from _leaves(value, where)


ALLOWED_TARGETS = ("model._target_",)  # the only class path a config may name (model=custom)


def _check_values(cfg: DictConfig, numbers: bool) -> None:
    """No `_target_` but model._target_ (a nested one would be called by Hydra's instantiate:
    any function, with any arguments); with `numbers`, every number finite (after the
    schemas' own checks, which also say the valid range)."""
    try:
        tree = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception:  # an interpolation error: to_object names it
        return
    for path, key, value in _leaves(tree):
        _check(key != "_target_" or path in ALLOWED_TARGETS,
               f"{path}: a _target_ is allowed only as model._target_ (an nn.Module class); "
               f"nothing else in a config is instantiated")
        _check(not numbers or not isinstance(value, float) or math.isfinite(value),
               f"{path} must be a finite number, got {value}")


def validate(cfg: DictConfig) -> Config:
    """The typed, checked config; raises ValueError naming the field, value and valid range."""
    load_plugins()  # a job in a fresh worker process knows the plugins' options too
    _check_values(cfg, numbers=False)
    try:
        obj = OmegaConf.to_object(cfg)
    except Exception as exc:  # OmegaConf wraps __post_init__ errors; surface the message
        cause = exc.__cause__ if isinstance(exc.__cause__, ValueError) else None
        raise ValueError(str(cause) if cause else str(exc)) from exc
    if not isinstance(obj, Config):
        raise ValueError("config does not extend base_config; add it to the defaults list")
    _reject_unknown_keys(cfg, obj)
    _check_values(cfg, numbers=True)
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
