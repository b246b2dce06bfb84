"""CIFAR-10: the original through torchvision, or offline the lossy JPEG q75 image-folder copy
(conf/dataset/cifar10.yaml)."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import torch

from emergence_lab.data.base import DATASETS, DatasetConfig, DatasetEntry, TensorData, digest_of
from emergence_lab.data.image_folder import load_image_folder

log = logging.getLogger(__name__)


CIFAR_JPEG = "cifar10-jpeg75"


def locate_cifar10(cfg) -> Path | None:
    """None when the original CIFAR-10 is in the data dir (downloading it if allowed), else the
    folder of the JPEG q75 copy, unpacked from dataset.sources if need be."""
    import torchvision.datasets as tvd

    data_dir = Path(cfg.data_dir)
    failure = ""
    if (data_dir / "cifar-10-batches-py").is_dir() or cfg.download:
        try:
            for train in (True, False):
                tvd.CIFAR10(str(data_dir), train=train, download=cfg.download)
            return None
        except Exception as exc:  # offline or corrupt: fall back to the JPEG copy below
            failure = f" (the original: {type(exc).__name__}: {exc})"
            log.warning("CIFAR-10 original unavailable%s; using the JPEG q75 copy", failure)
    folder = data_dir / CIFAR_JPEG
    if not folder.is_dir():
        archive = next((Path(s) / f"{CIFAR_JPEG}.tar.gz" for s in cfg.sources
                        if (Path(s) / f"{CIFAR_JPEG}.tar.gz").is_file()), None)
        if archive is None:
            raise FileNotFoundError(
                f"cifar10: no data{failure}. Ways to get it:\n  1. dataset.download=true with "
                f"internet (the original);\n  2. the original in {data_dir}/cifar-10-batches-py;"
                f"\n  3. {CIFAR_JPEG}.tar.gz in one of dataset.sources={list(cfg.sources)} or "
                f"its train/ and test/ folders in {folder}")
        _unpack(archive, folder)
    return folder


def load_cifar10(cfg) -> TensorData:
    """The original CIFAR-10 (torchvision) when present or downloadable; offline, the lossy
    JPEG q75 image-folder copy, unpacked from dataset.sources into the data dir."""
    import torchvision.datasets as tvd

    folder = locate_cifar10(cfg)
    if folder is not None:
        return load_image_folder(folder, 32, 3, "CIFAR-10 (JPEG q75)")
    train = tvd.CIFAR10(cfg.data_dir, train=True)
    test = tvd.CIFAR10(cfg.data_dir, train=False)
    to_x = lambda d: torch.from_numpy(d.data).permute(0, 3, 1, 2).float().div_(255)  # noqa: E731
    return TensorData(to_x(train), torch.tensor(train.targets), to_x(test),
                      torch.tensor(test.targets), 10,
                      digest_of([str(train.train_list), str(test.test_list)]), "CIFAR-10",
                      source=str(Path(train.root).resolve() / train.base_folder))


DATASETS.add(DatasetEntry("cifar10", load_cifar10, lambda cfg: ((3, 32, 32), 10), DatasetConfig,
                          "CIFAR-10", locate_cifar10))


def _unpack(archive: Path, dest: Path) -> None:
    """Extract a .tar.gz into dest atomically (parallel jobs may race)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    try:
        os.replace(tmp, dest)
    except OSError:  # another job got there first
        shutil.rmtree(tmp, ignore_errors=True)
