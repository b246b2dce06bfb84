"""What identifies a run: the config fields that determine its result, hashes of them, and a
name a person can read. Also where the code came from (the git commit)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import torch

from emergence_lab.config import Config, TrainerConfig

NOT_DATA = ("data_dir", "sources", "download")  # where data comes from, not what it is
NOT_RESULT = ("device", "num_threads", "checkpoints")  # how a run executes, not what it computes


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short hash of a JSON-able object, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:length]


# Fields added after the first stored runs, with the default that reproduces the behaviour
# from before them: left out of the identity while they hold that default, so adding them kept
# every stored config_hash (open_lth's rule, for these fields).
ADDED_FIELDS = {("trainer", "lr_after_prune"): None, ("dataset", "normalize"): False}


def _drop_added_defaults(fields: dict[str, Any]) -> dict[str, Any]:
    for (section, name), default in ADDED_FIELDS.items():
        for part in (fields.get(section), (fields.get("pretrain") or {}).get(section)):
            if isinstance(part, dict) and name in part and part[name] == default:
                del part[name]
    return fields


def _pruning_fields(p: dict[str, Any]) -> dict[str, Any]:
    """An unpruned branch (amount 0) computes the same thing whichever strategy would have
    pruned it: one identity for all of them (that of global magnitude, the first default)."""
    if p["amount"] == 0 and p["name"] != "none":
        return {**p, "name": "magnitude", "scope": "global"}
    return p


def _data_fields(d: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if d is None else {k: v for k, v in d.items() if k not in NOT_DATA}


def identity_fields(c: Config) -> dict[str, Any]:
    """The config fields that determine a run's result (no paths, devices or tracking).

    Their hash (tag config_hash) is a cell's identity: a rerun of a sweep skips cells that
    have a FINISHED run with it. It is computed from the config alone; which exact data a run
    read is its tag data_digest.
    """
    d = dataclasses.asdict(c)
    trainer = {k: v for k, v in d["trainer"].items() if k not in NOT_RESULT}
    if trainer.get("lr_after_prune") == trainer["lr"]:  # the same lr throughout: the default
        trainer["lr_after_prune"] = None
    pretrain = {"epochs": d["pretrain"]["epochs"], "dataset": _data_fields(d["pretrain"]["dataset"])}
    return _drop_added_defaults({
        "model": d["model"], "dataset": _data_fields(d["dataset"]), "trainer": trainer,
        "pruning": _pruning_fields(d["pruning"]), "threshold": d["threshold"], "init": d["init"],
        "pretrain": pretrain})


def config_hash(c: Config) -> str:
    """The identity of a run's configuration (see identity_fields)."""
    return stable_hash(identity_fields(c))


def prefix_key(c: Config, digests: list[str | None], device: torch.device) -> str:
    """Cache key of the training before the first pruning step: what shapes it (not the
    epochs after it, nor how much is pruned then), down to the exact data and device."""
    fields = identity_fields(c)
    ignore = ("epochs", "stop_epsilon", "stop_patience", "lr_after_prune")
    trainer = {k: v for k, v in fields["trainer"].items() if k not in ignore}
    return stable_hash({**fields, "trainer": trainer, "pruning": fields["pruning"]["epoch"],
                        "digests": digests, "device": device.type}, length=20)


def run_name(c: Config) -> str:
    """A readable run name, e.g. fashion_mnist-mlp-magnitude0.5-seed0."""
    p = c.pruning
    pruning = "none" if p.name == "none" else f"{p.name}{p.amount:g}"
    pruning += f"x{p.steps}" if p.name != "none" and p.steps > 1 else ""
    pruning += "-layerwise" if p.name in ("magnitude", "random") and p.scope == "layerwise" else ""
    parts = [c.dataset.name, c.model.name, pruning]
    if c.init.name != "standard":
        parts.append(f"{c.init.name}{c.init.alpha:g}")
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


def git_commit() -> str:
    """The commit of the code, 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict to dotted keys: {'a': {'b': 1}} -> {'a.b': 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
