"""What identifies a run: the config fields that determine its result, hashes of them, and a
name a person can read. Also where the code came from (the git commit).

The identity follows open_lth's rule: only fields that differ from their defaults count, so a
new field whose default keeps today's behaviour leaves every stored run's identity as it was.
The flip side: a default must never change once runs were stored with it (docs/how-to/sweeps-that-survive.md).
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import os
import sys
from typing import Any

import torch

from emergence_lab.config.groups import ThresholdConfig, TrainerConfig
from emergence_lab.config.schema import Config
from emergence_lab.models import INITS, MODELS
from emergence_lab.prune.base import CONTROL_IDENTITY, RESETS, STRATEGIES, PruningConfig, describe

NOT_DATA = ("data_dir", "sources", "download")  # where data comes from, not what it is
# how a run executes, not what it computes (beyond the last digits, as threads do)
NOT_RESULT = ("device", "num_threads", "checkpoints", "compile", "channels_last")


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short hash of a JSON-able object, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:length]


def _settings_fields(settings: Any) -> dict[str, Any]:
    """A settings dataclass's fields that shape a result and differ from their defaults (the
    settings class's own defaults); `name`, the option, always."""
    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING
                         else f.default) for f in dataclasses.fields(settings)}
    return {k: v for k, v in dataclasses.asdict(settings).items()
            if k not in NOT_DATA + NOT_RESULT and (k == "name" or v != defaults[k])}


def _canonical(c: Config, threshold: ThresholdConfig | None = None) -> dict[str, Any]:
    """The config's settings per group, with equivalent settings made equal: the same lr after
    pruning as before is no lr_after_prune; an unpruned branch (amount 0) prunes nothing and
    resets nothing, whichever strategy and schedule name it: one identity per pruning epoch
    (that of one-shot global magnitude), as the epoch is where lr_after_prune takes over."""
    trainer = dataclasses.replace(c.trainer, lr_after_prune=None) \
        if c.trainer.lr_after_prune == c.trainer.lr else c.trainer
    pruning = c.pruning
    if pruning.amount == 0 and STRATEGIES[pruning.name].prunes:
        pruning = PruningConfig(name=CONTROL_IDENTITY, epoch=pruning.epoch)
    return {"model": c.model, "dataset": c.dataset, "trainer": trainer, "pruning": pruning,
            "threshold": threshold or identity_threshold(c), "init": c.init,
            "pretrain": c.pretrain}


def identity_threshold(c: Config) -> ThresholdConfig:
    """What of the threshold group shapes a run: only the counted layers (what the network's
    units are), unless the emergence stopper reads E (trainer.stop_epsilon), when the whole
    setting decides when training stops. Rule, θ, counting and grid are analysis settings:
    every run stores what E needs under any of them (measure.record)."""
    if c.trainer.stop_epsilon is not None:
        return c.threshold
    return ThresholdConfig(layers=list(c.threshold.layers))


def identity_fields(c: Config, threshold: ThresholdConfig | None = None) -> dict[str, Any]:
    """The config fields that shape a run's result and differ from their defaults, by dotted
    key (open_lth's rule: a new field whose default keeps today's behaviour changes nothing).
    Paths, devices, threads and tracking are left out: they do not change what is computed."""
    fields: dict[str, Any] = {}
    for group, settings in _canonical(c, threshold).items():
        if group == "pretrain":
            if settings.epochs:
                fields["pretrain.epochs"] = settings.epochs
                fields |= {f"pretrain.dataset.{k}": v
                           for k, v in _settings_fields(settings.dataset).items()}
            continue
        fields |= {f"{group}.{k}": v for k, v in _settings_fields(settings).items()}
    return fields


# The first identity scheme hashed every field of these schemas (nested by group). A config
# it could express (its other fields at their defaults) keeps the hash it gave, so the runs
# stored under it keep theirs: FINISHED cells are skipped, interrupted ones resumed.
V1_FIELDS: dict[str, dict[str, Any]] = {
    "dataset": {"name": None, "probe_size": 2048, "probe_seed": 0, "test_fraction": 0.2,
                "split_seed": 0, "root": None, "image_size": 32, "channels": 3},
    "trainer": {"epochs": 20, "lr": 0.005, "momentum": 0.0, "weight_decay": 0.0,
                "batch_size": 64, "eval_batch_size": 1024, "seed": 0, "stop_epsilon": None,
                "stop_patience": 3},
    "pruning": {"name": "none", "amount": 0.0, "epoch": 0, "scope": "global", "steps": 1,
                "interval": 1},
    "threshold": {"theta": 0.05, "mode": "mean", "min_fraction": 0.5, "layers": ["hidden"],
                  "grid": [0.0, 0.01, 0.05, 0.1]},
    "init": {"name": "standard", "alpha": 1.0},
}
V1_MODELS = {"mlp": ("name", "hidden"), "cnn": ("name", "channels", "hidden", "kernel_size", "pool")}
V1_OPTIONAL = {("trainer", "lr_after_prune"), ("dataset", "normalize")}  # hashed when set


V1_RENAMED = {("threshold", "rule"): "mode"}  # fields renamed since: the first scheme's names


def _v1_group(group: str, settings: Any, layout: dict[str, Any]) -> dict[str, Any] | None:
    values = {V1_RENAMED.get((group, k), k): v for k, v in dataclasses.asdict(settings).items()
              if k not in NOT_DATA + NOT_RESULT}
    changed = {V1_RENAMED.get((group, k), k): v for k, v in _settings_fields(settings).items()}
    extra = {k for k in changed if k not in layout and (group, k) not in V1_OPTIONAL}
    if extra:
        return None  # a field the first scheme did not have holds a non-default value
    return {**layout, **{k: v for k, v in values.items() if k in layout},
            **{k: changed[k] for k in changed if (group, k) in V1_OPTIONAL}}


def v1_fields(c: Config, threshold: ThresholdConfig | None = None) -> dict[str, Any] | None:
    """The config as the first identity scheme saw it; None if it cannot express it."""
    groups = _canonical(c, threshold)
    if c.model.name not in V1_MODELS:
        return None
    layouts = {"model": dict.fromkeys(V1_MODELS[c.model.name]), **V1_FIELDS}
    out: dict[str, Any] = {}
    for group, layout in layouts.items():
        out[group] = _v1_group(group, groups[group], layout)
        if out[group] is None:
            return None
    pre = c.pretrain.dataset
    out["pretrain"] = {"epochs": c.pretrain.epochs, "dataset": None if pre is None
                       else _v1_group("dataset", pre, V1_FIELDS["dataset"])}
    if pre is not None and out["pretrain"]["dataset"] is None:
        return None
    return out


def config_hash(c: Config) -> str:
    """A cell's identity (tag config_hash): the hash the first scheme gave the config when it
    can express it, else the hash of `identity_fields`. Either way a field added with a default
    that keeps today's behaviour changes no hash. A rerun of a sweep skips cells that have a
    FINISHED run with it; which exact data a run read is its tag data_digest."""
    return _hash(c, None)


def _hash(c: Config, threshold: ThresholdConfig | None) -> str:
    v1 = v1_fields(c, threshold)
    return stable_hash(v1 if v1 is not None else identity_fields(c, threshold))


def legacy_hash(c: Config) -> str | None:
    """The hash the cell had while the whole threshold group was part of identity, where it
    differs and that run's emergence/E is still the paper's setting (mean > 0.05, units; only
    the θ grid or the fraction share differed, as in experiment=resnet_cifar): such stored
    runs stay found. Runs stored under another rule or θ measured emergence/E otherwise and
    are not taken for this cell."""
    t = c.threshold
    if c.trainer.stop_epsilon is not None:
        return None
    old = ThresholdConfig(layers=list(t.layers), grid=list(t.grid), min_fraction=t.min_fraction)
    if old == identity_threshold(c):
        return None
    h = _hash(c, old)
    return h if h != config_hash(c) else None


def prefix_key(c: Config, digests: list[str | None], device: torch.device) -> str:
    """Cache key of the training before the first pruning step: what shapes it (not the
    epochs after it, nor how much is pruned then), down to the exact data and device."""
    p = c.pruning
    keep = {"epoch", *STRATEGIES[p.name].prefix_fields, *RESETS[p.reset].prefix_fields}
    after = ("trainer.epochs", "trainer.stop_epsilon", "trainer.stop_patience",
             "trainer.lr_after_prune")
    fields = {k: v for k, v in identity_fields(c).items()
              if k not in after and not k.startswith("pruning.")}
    fields |= {f"pruning.{k}": getattr(p, k) for k in keep}
    return stable_hash({**fields, "digests": digests, "device": device.type}, length=20)


def run_name(c: Config) -> str:
    """A readable run name, e.g. fashion_mnist-mlp-magnitude0.5-seed0."""
    parts = [c.dataset.name, MODELS[c.model.name].describe(c.model), describe(c.pruning)]
    init = INITS[c.init.name].tag(c.init)
    parts += [init] if init else []
    if c.pretrain.epochs:
        parts.insert(0, f"{c.pretrain.dataset.name}{c.pretrain.epochs}to")
    t, default = c.trainer, TrainerConfig()
    if t.lr_after_prune is not None and t.lr_after_prune != t.lr:
        parts.append(f"lr{t.lr_after_prune:g}")
    if t.batch_size != default.batch_size:
        parts.append(f"bs{t.batch_size}")
    if t.momentum != default.momentum:
        parts.append(f"mom{t.momentum:g}")
    if c.dataset.normalize:
        parts.append("std")
    return "-".join(parts) + f"-seed{c.trainer.seed}"


def source_name() -> str:
    """What MLflow shows as a run's Source: the entry script, as this process was started."""
    return os.path.relpath(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def user_name() -> str:
    """Who runs it (MLflow's 'Created by'): the login name, else $USER, else 'unknown'."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")


def environment() -> str:
    """The Python and every installed package's version, one per line (pip freeze's form),
    and the torch build: what a sweep ran with."""
    from importlib.metadata import distributions

    import torch

    pkgs = sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions()
                   if d.metadata["Name"]}, key=str.lower)
    return "\n".join([f"# python {sys.version.split()[0]} ({sys.platform})",
                      f"# torch {torch.__version__}, cuda {torch.version.cuda}", *pkgs]) + "\n"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict to dotted keys: {'a': {'b': 1}} -> {'a.b': 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
