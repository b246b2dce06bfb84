"""What every data set shares: the in-memory tensors (`TensorData`), the settings every data
set has, its registry entry, and loading, standardizing and checking a data set by name.

A data set is one module of this package (imported by `emergence_lab.data`) that calls
`DATASETS.add(...)`, and one YAML in conf/dataset/ extending its settings (`base_<name>` or
`base_dataset`)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import MISSING

from emergence_lab.registry import Registry, check


@dataclass(frozen=True)
class TensorData:
    """Train and test tensors, (N, C, H, W) float32 in [0, 1] and int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    digest: str  # identifies the exact data (md5 over the source files or arrays)
    label: str = ""  # how reports name the data, e.g. "CIFAR-10 (JPEG q75)"
    x_val: torch.Tensor | None = None  # held out of the training data (dataset.val_fraction)
    y_val: torch.Tensor | None = None
    source: str = ""  # where it was read from: a folder, or the library function that made it

    def to(self, device: torch.device) -> TensorData:
        """The same data on `device` (one copy; batches are then slices on the device). To a
        GPU the copy goes from pinned memory, asynchronously (ordered before any use)."""
        device = torch.device(device)
        cuda = device.type == "cuda"

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None or t.device == device:
                return t
            return (t.pin_memory() if cuda else t).to(device, non_blocking=cuda)

        return dataclasses.replace(self, x_train=move(self.x_train), y_train=move(self.y_train),
                                   x_test=move(self.x_test), y_test=move(self.y_test),
                                   x_val=move(self.x_val), y_val=move(self.y_val))

    def held_out(self, fraction: float, seed: int) -> TensorData:
        """A seeded share of the training data held out as the validation split (the rest
        trains); the digest names the split."""
        if fraction == 0:
            return self
        n = self.x_train.shape[0]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        n_val = max(1, int(round(n * fraction)))
        val, train = perm[:n_val].to(self.x_train.device), perm[n_val:].to(self.x_train.device)
        return dataclasses.replace(self, x_train=self.x_train[train], y_train=self.y_train[train],
                                   x_val=self.x_train[val], y_val=self.y_train[val],
                                   digest=digest_of([self.digest, f"val{fraction:g}", str(seed)]))

    def probe(self, size: int, seed: int) -> torch.Tensor:
        """A fixed, seeded subset of the training inputs (the emergence probe set)."""
        n = self.x_train.shape[0]
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(size, n)]
        return self.x_train[idx.to(self.x_train.device)]


def digest_of(parts: Sequence[str | bytes]) -> str:
    h = hashlib.md5()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()


@dataclass
class DatasetConfig:
    """Settings every data set has."""

    name: str = MISSING
    data_dir: str = "data"
    sources: list[str] = field(default_factory=list)  # local dirs searched before downloading
    download: bool = True
    probe_size: int = 2048  # emergence probe: fixed, seeded subset of the training set
    probe_seed: int = 0
    normalize: bool = False  # standardize each input channel with the training set's mean and std
    val_fraction: float = 0.0  # share of the training data held out for validation (0: none)
    val_seed: int = 0  # which share

    def __post_init__(self) -> None:
        check(self.probe_size > 0, f"dataset.probe_size must be > 0, got {self.probe_size}")
        check(math.isfinite(self.val_fraction) and 0 <= self.val_fraction < 1,
              f"dataset.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class DatasetEntry:
    """A data set option: loader (settings -> TensorData on the CPU), input shape and class
    count known without loading it, settings dataclass, label, and an availability check that
    fetches and verifies its files without loading them (run once before a sweep)."""

    name: str
    load: Callable[[Any], TensorData]
    shape: Callable[[Any], tuple[tuple[int, ...], int]]
    settings: type[DatasetConfig]
    label: str
    check: Callable[[Any], None] = lambda cfg: None


DATASETS: Registry[DatasetEntry] = Registry("dataset.name")


def shape_of(cfg) -> tuple[tuple[int, ...], int]:
    """(input shape (C, H, W), number of classes) of the data set a DatasetConfig names."""
    return DATASETS[cfg.name].shape(cfg)


def check_available(cfg) -> None:
    """Fetch and verify a data set's files without loading it (run once, before a sweep's jobs:
    missing or corrupt data fails there, and parallel jobs find the files in place)."""
    DATASETS[cfg.name].check(cfg)


def load_dataset(cfg) -> TensorData:
    """Load the data set named by `cfg.name` (a DatasetConfig) into memory, on the CPU."""
    data = DATASETS[cfg.name].load(cfg).held_out(getattr(cfg, "val_fraction", 0.0),
                                                 getattr(cfg, "val_seed", 0))
    return standardized(data) if getattr(cfg, "normalize", False) else data


def standardized(data: TensorData) -> TensorData:
    """Each input channel shifted and scaled by the training set's mean and std (a constant
    channel is only shifted), the test set with the same numbers."""
    dims = [0, *range(2, data.x_train.dim())]
    mean = data.x_train.mean(dim=dims, keepdim=True)
    std = data.x_train.std(dim=dims, keepdim=True).clamp_min(1e-8)
    return dataclasses.replace(data, x_train=(data.x_train - mean) / std,
                               x_test=(data.x_test - mean) / std,
                               x_val=None if data.x_val is None else (data.x_val - mean) / std,
                               label=f"{data.label or 'data'} (standardized)")
