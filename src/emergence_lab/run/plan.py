"""A run's plan: the composed config validated and resolved once, frozen, with everything the
stages derive from it (identity, name, device, pruning schedule, tags). Each stage receives the
part it needs: the store's `Cell` to own the cell, the typed config to build and train.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from emergence_lab.config import Config, validate
from emergence_lab.config.identity import code_state, config_hash, git_commit, run_name
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
    code_state: str = ""  # identity.code_state: clean, or dirty and the diff's digest

    def tags(self, **data: Any) -> dict[str, Any]:
        """The run's tags; `data` adds what is known once the data is loaded."""
        c = self.config
        return {"config_hash": self.identity, "git_commit": self.commit,
                "mlflow.source.git.commit": self.commit, "git_state": self.code_state,
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
                    self.config.force, t.on_taken, t.stale_after_s)


def make_plan(cfg: DictConfig, parent_run_id: str | None = None,
              overrides: list[str] | None = None) -> RunPlan:
    """Validate the composed config once and derive the run's plan; raises ValueError naming
    the bad field (see run.config.validate) or a device this machine lacks."""
    c = validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    return RunPlan(c, resolved, config_hash(c), run_name(c), git_commit(),
                   resolve_device(c.trainer.device), tuple(schedule(c.pruning)),
                   tuple(overrides or ()), parent_run_id, code_state())
