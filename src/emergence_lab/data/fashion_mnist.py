"""Fashion-MNIST (Xiao et al. 2017), an idx data set (conf/dataset/fashion_mnist.yaml)."""

from __future__ import annotations

from emergence_lab.data.base import DATASETS
from emergence_lab.data.idx import idx_dataset

DATASETS.add(idx_dataset("fashion_mnist", "FashionMNIST", {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}, "Fashion-MNIST", hint="Debian: apt-get install dataset-fashion-mnist"))
