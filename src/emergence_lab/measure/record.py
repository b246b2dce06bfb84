"""A run's stored measurements: one file per measured state (every epoch, and right after each
pruning step), so E can be recomputed under any setting without training again.

A file holds `Measurement.to_state()`: the unit graph's ops, live units, surviving connections
(only for layers with zero weights) and per-unit statistics. Artifact paths:
`measurements/epoch_0005.pt`, `measurements/pruned_0005.pt` (after the step at epoch 5).
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from emergence_lab.measure.probe import Measurement

FOLDER = "measurements"


def file_name(epoch: int, phase: str = "epoch") -> str:
    """phase: epoch (after training epoch `epoch`; 0 is the initial network) or pruned."""
    if phase not in ("epoch", "pruned"):
        raise ValueError(f"measurement phase must be epoch or pruned, got {phase!r}")
    return f"{phase}_{epoch:04d}.pt"


def parse_name(name: str) -> tuple[str, int] | None:
    """(phase, epoch) of a measurement file name, None for another file."""
    stem, _, ext = name.rpartition(".")
    phase, _, epoch = stem.partition("_")
    if ext != "pt" or phase not in ("epoch", "pruned") or not epoch.isdigit():
        return None
    return phase, int(epoch)


def to_bytes(m: Measurement) -> bytes:
    buf = io.BytesIO()
    torch.save(m.to_state(), buf)
    return buf.getvalue()


def save(m: Measurement, path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(to_bytes(m))
    return path


def load(path: str | Path) -> Measurement:
    """A stored measurement; one torch refuses under weights_only=True is an error naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"measurement file {path} is refused by torch.load(weights_only=True) "
                         f"({type(exc).__name__})") from None
    return Measurement.from_state(state)
