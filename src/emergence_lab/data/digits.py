"""scikit-learn's bundled 8x8 digits, the tests' data set (conf/dataset/digits.yaml)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emergence_lab.data.base import DATASETS, DatasetConfig, DatasetEntry, TensorData, digest_of
from emergence_lab.registry import check


@dataclass
class DigitsConfig(DatasetConfig):
    name: str = "digits"
    test_fraction: float = 0.2  # it has no official test split: a fixed, seeded one
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.test_fraction < 1,
              f"dataset.test_fraction must be in (0, 1), got {self.test_fraction}")


def digits_file() -> Path:
    """scikit-learn's file of the digits, found without importing scikit-learn (a second of
    CPU in every worker, for a 1,797-row table)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dataset=digits needs scikit-learn, which is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images as n x 8 x 8 floats in 0..16, labels): what sklearn.datasets.load_digits reads."""
    table = np.loadtxt(digits_file(), delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def load_digits(cfg) -> TensorData:
    """scikit-learn's bundled 8x8 digits (1,797 images) with a fixed, seeded test split."""
    images, labels = read_digits()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(labels, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.split_seed))
    n_test = int(round(len(y) * cfg.test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    digest = digest_of([x.numpy().tobytes(), y.numpy().tobytes(), str(cfg.split_seed),
                      str(cfg.test_fraction)])
    return TensorData(x[train], y[train], x[test], y[test], 10, digest, "digits (scikit-learn)",
                      source="sklearn.datasets.load_digits")


DATASETS.add(DatasetEntry("digits", load_digits, lambda cfg: ((1, 8, 8), 10), DigitsConfig,
                          "digits"))
