"""The composed config's schema (`Config`), its registration in Hydra's ConfigStore and the check
that turns a composed config into a typed one (`validate`).

The options of the pluggable groups (model, dataset, pruning, init) bring their own settings
dataclasses from their registries; each is stored as `schema/<group>/<name>`, and its YAML
extends it. A typo in a key or a wrong type fails when Hydra composes the config; range and
cross-field checks run in `__post_init__`, called by `validate` (OmegaConf.to_object) before
any run exists.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from emergence_lab.config import groups
from emergence_lab.data import DATASETS, DatasetConfig
from emergence_lab.models import INITS, MODELS, InitConfig
from emergence_lab.prune.base import STRATEGIES, PruningConfig
from emergence_lab.registry import check as _check
from emergence_lab.registry import load_plugins


@dataclass
class Config:
    model: Any = MISSING  # the settings of a MODELS entry
    dataset: Any = MISSING  # the settings of a DATASETS entry
    pruning: Any = field(default_factory=PruningConfig)  # the settings of a STRATEGIES entry
    threshold: groups.ThresholdConfig = field(default_factory=groups.ThresholdConfig)
    trainer: groups.TrainerConfig = field(default_factory=groups.TrainerConfig)
    tracking: groups.TrackingConfig = field(default_factory=groups.TrackingConfig)
    init: Any = field(default_factory=InitConfig)  # the settings of an INITS entry
    pretrain: groups.PretrainConfig = field(default_factory=groups.PretrainConfig)
    landscape: groups.LandscapeConfig = field(default_factory=groups.LandscapeConfig)  # not identity
    sweep: groups.SweepConfig = field(default_factory=groups.SweepConfig)  # how it goes, not identity
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
                        ("init", InitConfig), ("threshold", groups.ThresholdConfig),
                        ("trainer", groups.TrainerConfig), ("tracking", groups.TrackingConfig),
                        ("pretrain", groups.PretrainConfig), ("landscape", groups.LandscapeConfig),
                        ("sweep", groups.SweepConfig)):
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
