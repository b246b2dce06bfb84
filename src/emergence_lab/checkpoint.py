"""Checkpoints (pruning masks included) and the shared pre-prune state of sibling runs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from emergence_lab.pruning import prepare_for_state


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    **extra: Any) -> None:
    """Write model (with masks) and optimizer state atomically; extra holds plain values."""
    payload = {"model": model.state_dict(),
               "optimizer": optimizer.state_dict() if optimizer else None, **extra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Restore a checkpoint into model (re-creating pruning masks) and optimizer."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    restore_state(payload, model, optimizer)
    return payload


def restore_state(payload: dict[str, Any], model: nn.Module,
                  optimizer: torch.optim.Optimizer | None = None) -> None:
    """Load a payload's model and optimizer states; pruning masks are re-created first."""
    prepare_for_state(model, payload["model"])
    model.load_state_dict(payload["model"])
    if optimizer is not None and payload.get("optimizer") is not None:
        # prune renames `weight` to `weight_orig` but keeps the Parameter object, so an optimizer
        # built before pruning still lines up with the saved per-parameter state.
        optimizer.load_state_dict(payload["optimizer"])


def shared_prefix(cache_dir: str | Path, key: str,
                  compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The cached payload for `key`, computed by the first caller; (payload, was_cached).

    A file lock serialises siblings: one trains, the others wait and then load its result.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.pt"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True), True
        payload = compute()
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{key}.")
        os.close(fd)
        torch.save(payload, tmp)
        os.replace(tmp, path)
        return payload, False
