"""scikit-learn's bundled 8x8 digits, the tests' data set (conf/dataset/digits.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

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


def load_digits(cfg) -> TensorData:
    """scikit-learn's bundled 8x8 digits (1,797 images) with a fixed, seeded test split."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.split_seed))
    n_test = int(round(len(y) * cfg.test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    digest = digest_of([x.numpy().tobytes(), y.numpy().tobytes(), str(cfg.split_seed),
                      str(cfg.test_fraction)])
    return TensorData(x[train], y[train], x[test], y[test], 10, digest, "digits (scikit-learn)")


DATASETS.add(DatasetEntry("digits", load_digits, lambda cfg: ((1, 8, 8), 10), DigitsConfig,
                          "digits"))
