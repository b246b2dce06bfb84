"""Data sets loaded once into memory as tensors; batches are index slices of them. One module
per data set (each calls `DATASETS.add`; every module here is imported), the shared parts in
`base` (and `idx` for the idx-format ones). The options are the entries of `DATASETS`.

May import `registry` and `files`.
"""

from __future__ import annotations

from emergence_lab.data.base import (
    DATASETS,
    DatasetConfig,
    DatasetEntry,
    TensorData,
    check_available,
    load_dataset,
    shape_of,
    standardized,
)
from emergence_lab.registry import import_submodules

import_submodules(__name__)

__all__ = ["DATASETS", "DatasetConfig", "DatasetEntry", "TensorData", "check_available",
           "load_dataset", "shape_of", "standardized"]
