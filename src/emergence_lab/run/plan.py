"""A run's plan: the composed config validated and resolved once, frozen, with everything the
stages derive from it (identity, name, device, pruning schedule, tags). Each stage receives the
part it needs: the store's `Cell` to own the cell, the typed config to build and train.

A sweep plans every job before any starts (`sweep.jobs.plan_sweep`); its local launcher hands
each job its plan (`hand`), and the job takes it instead of validating, checking and hashing
its config again when the config Hydra composed for it resolves to the plan's.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from emergence_lab.config import Config, validate
from emergence_lab.config.code_version import code_state, git_commit
from emergence_lab.config.identity import (
    config_hash,
    run_name,
    source_name,
    user_name,
)
from emergence_lab.prune.schedules import schedule
from emergence_lab.store.cells import Cell

# Device names that stand for another: auto is cuda when there is one, else the cpu.
DEVICE_ALIASES: dict[str, Callable[[], str]] = {
    "auto": lambda: "cuda" if torch.cuda.is_available() else "cpu"}


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when available, else cpu; a device this machine lacks is a ValueError."""
    device = torch.device(DEVICE_ALIASES.get(name, lambda: name)())
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available,
                 "cpu": lambda: True}[device.type]()
    if device.type == "cuda" and available and (device.index or 0) >= torch.cuda.device_count():
        available = False
    if not available:
        raise ValueError(f"trainer.device={name}: this machine ({socket.gethostname()}) has no "
                         f"such device; use trainer.device=auto (cuda when there is one) or cpu")
    return device


@dataclass(frozen=True)
class RunPlan:
    """One run, decided before anything runs. `config` is the typed, checked config (read, never
    changed); `resolved` the composed config as logged (the run's params and config.yaml)."""

    config: Config
    resolved: dict[str, Any]
    identity: str  # config_hash: the cell
    name: str
    commit: str
    device: torch.device
    events: tuple[tuple[int, float], ...]  # the pruning schedule: (epoch, rate) steps
    overrides: tuple[str, ...]
    parent_run_id: str | None
    code_state: str = ""  # code_version.code_state: clean, or dirty and the digest of what differs
    preflighted: bool = False  # its network and data were checked (the sweep's callback did)
    source: str = ""  # the entry script (MLflow's Source)
    user: str = ""  # who runs it (MLflow's Created by)

    def tags(self, **data: Any) -> dict[str, Any]:
        """The run's tags; `data` adds what is known once the data is loaded."""
        c = self.config
        return {"config_hash": self.identity, "git_commit": self.commit,
                "mlflow.source.git.commit": self.commit, "git_state": self.code_state,
                "git_dirty": str(self.code_state.startswith("dirty")).lower(),
                "mlflow.source.name": self.source, "mlflow.source.type": "LOCAL",
                "mlflow.user": self.user,
                "dataset": c.dataset.name,
                "model": c.model.name, "pruning": c.pruning.name, "device": str(self.device),
                "torch_threads": torch.get_num_threads(),
                "overrides": " ".join(self.overrides)[:5000], **data}

    def steps(self, n_train: int, n_pretrain: int = 0) -> int:
        """The optimizer steps the run takes (what decides whether compiling repays itself)."""
        t, batches = self.config.trainer, lambda n: -(-n // self.config.trainer.batch_size)
        return t.epochs * batches(n_train) + self.config.pretrain.epochs * batches(n_pretrain)

    def cell(self, tags: dict[str, Any]) -> Cell:
        """The store's part: which cell, where, and how to treat another owner."""
        t = self.config.tracking
        return Cell(t.uri, t.experiment, self.identity, self.name, tags, self.parent_run_id,
                    self.config.force, t.on_taken, t.stale_after_s, t.stall_after_s)


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as logged: resolved, without Hydra's node."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    return resolved


def plan_of(cfg: DictConfig, c: Config, overrides: list[str] | None = None,
            parent_run_id: str | None = None, commit: str | None = None,
            state: str | None = None, device: torch.device | None = None,
            preflighted: bool = False) -> RunPlan:
    """The plan of a composed config `cfg` already validated as `c`; the code's commit and
    state (git calls) and the device given where a sweep computed them once."""
    return RunPlan(c, resolved_config(cfg), config_hash(c), run_name(c),
                   git_commit() if commit is None else commit,
                   resolve_device(c.trainer.device) if device is None else device,
                   tuple(schedule(c.pruning)), tuple(overrides or ()), parent_run_id,
                   code_state() if state is None else state, preflighted, source_name(),
                   user_name())


_handed: RunPlan | None = None  # the plan the sweep's launcher handed this process's job


def hand(plan: RunPlan | None) -> None:
    """The plan of the job this process runs next (None: none)."""
    global _handed
    _handed = plan


def make_plan(cfg: DictConfig, parent_run_id: str | None = None,
              overrides: list[str] | None = None) -> RunPlan:
    """The run's plan: the one handed to this job when `cfg` resolves to its config, else
    `cfg` validated once (ValueError naming the bad field, see config.validate, or a device
    this machine lacks)."""
    if _handed is not None and _handed.resolved == resolved_config(cfg):
        return dataclasses.replace(_handed, overrides=tuple(overrides or _handed.overrides),
                                   parent_run_id=parent_run_id or _handed.parent_run_id)
    return plan_of(cfg, validate(cfg), overrides, parent_run_id)
