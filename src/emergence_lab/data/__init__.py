"""Data sets loaded once into memory as tensors; batches are index slices of them.

Each data set is one entry of DATASETS: its settings dataclass, loader, input shape, label and
availability check. Idx data sets (MNIST, Fashion-MNIST, ...) are read by torchvision's classes
in their layout (<data_dir>/<Class>/raw); the files are looked for in the data dir, then in local
source dirs (gunzipped into the data dir), then through torchvision's download; their
uncompressed md5 sums are checked every time. Adding one is one `idx_dataset(...)` entry and
one YAML.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import math
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING

from emergence_lab.files import atomic_save
from emergence_lab.registry import Registry, check

log = logging.getLogger(__name__)


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

    def to(self, device: torch.device) -> TensorData:
        """The same data on `device` (one copy; batches are then slices on the device)."""
        move = (lambda t: None if t is None else t.to(device))  # noqa: E731
        return dataclasses.replace(self, x_train=self.x_train.to(device),
                                   y_train=self.y_train.to(device),
                                   x_test=self.x_test.to(device), y_test=self.y_test.to(device),
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
                                   digest=_digest([self.digest, f"val{fraction:g}", str(seed)]))

    def probe(self, size: int, seed: int) -> torch.Tensor:
        """A fixed, seeded subset of the training inputs (the emergence probe set)."""
        n = self.x_train.shape[0]
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(size, n)]
        return self.x_train[idx.to(self.x_train.device)]


def md5sum(path: Path) -> str:
    """Hex md5 of a file's bytes."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _copy_from_sources(raw: Path, fname: str, sources: Sequence[str]) -> bool:
    """Gunzip (or copy) `fname` from the first source dir that has it; atomic for parallel jobs."""
    for src in sources:
        for candidate, opener in ((Path(src) / f"{fname}.gz", gzip.open), (Path(src) / fname, open)):
            if candidate.is_file():
                raw.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{fname}.")
                with opener(candidate, "rb") as fin, os.fdopen(fd, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                os.replace(tmp, raw / fname)
                return True
    return False


def _download(folder: str, data_dir: Path) -> None:
    import torchvision.datasets as tvd

    cls = getattr(tvd, folder)
    try:
        for train in (True, False):
            cls(root=str(data_dir), train=train, download=True)
    except Exception as exc:  # urllib/http errors when offline: reported below, once
        raise FileNotFoundError(f"download failed ({type(exc).__name__}: {exc})") from None


def ensure_idx_files(name: str, folder: str, md5s: dict[str, str], hint: str, data_dir: str,
                     sources: Sequence[str], download: bool) -> Path:
    """The verified raw folder of an idx data set, fetched from the first place that has it."""
    raw = Path(data_dir) / folder / "raw"
    missing = [f for f in md5s if not (raw / f).is_file()]
    missing = [f for f in missing if not _copy_from_sources(raw, f, sources)]
    failure = ""
    if missing and download:
        try:
            _download(folder, Path(data_dir))
        except FileNotFoundError as exc:
            failure = f"\n  torchvision's download: {exc}"
        missing = [f for f in md5s if not (raw / f).is_file()]
    if missing:
        hint = f" ({hint})" if hint else ""
        raise FileNotFoundError(
            f"{name}: missing {missing} in {raw}. Ways to get them:\n"
            f"  1. put the idx files (or .gz) in one of dataset.sources={list(sources)}{hint};\n"
            f"  2. put the uncompressed files in {raw};\n"
            f"  3. set dataset.download=true on a machine with internet"
            f" (download={download}).{failure}")
    for fname, expected in md5s.items():
        got = md5sum(raw / fname)
        if got != expected:
            raise ValueError(f"{raw / fname} is corrupt: md5 {got}, expected {expected}; "
                             "delete it to fetch it again")
    return raw


def _digest(parts: Sequence[str | bytes]) -> str:
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


def idx_dataset(name: str, folder: str, md5s: dict[str, str], label: str, hint: str = "",
                shape: tuple[int, ...] = (1, 28, 28), classes: int = 10) -> DatasetEntry:
    """An idx data set that torchvision has a class for (`folder` is the class's name and its
    folder), with the md5 of each uncompressed file; `hint` says where to get the files."""

    def ensure(cfg) -> Path:
        return ensure_idx_files(name, folder, md5s, hint, cfg.data_dir, cfg.sources, cfg.download)

    def load(cfg) -> TensorData:
        import torchvision.datasets as tvd

        ensure(cfg)
        cls = getattr(tvd, folder)
        train = cls(root=cfg.data_dir, train=True, download=False)
        test = cls(root=cfg.data_dir, train=False, download=False)
        scale = lambda d: d.data.unsqueeze(1).float().div_(255)  # noqa: E731 - uint8 -> [0, 1]
        return TensorData(scale(train), train.targets.long(), scale(test), test.targets.long(),
                          len(train.classes), _digest(sorted(md5s.values())), label)

    return DatasetEntry(name, load, lambda cfg: (shape, classes), DatasetConfig, label, ensure)


DATASETS.add(idx_dataset("mnist", "MNIST", {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}, "MNIST"))
DATASETS.add(idx_dataset("fashion_mnist", "FashionMNIST", {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}, "Fashion-MNIST", hint="Debian: apt-get install dataset-fashion-mnist"))


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
    digest = _digest([x.numpy().tobytes(), y.numpy().tobytes(), str(cfg.split_seed),
                      str(cfg.test_fraction)])
    return TensorData(x[train], y[train], x[test], y[test], 10, digest, "digits (scikit-learn)")


DATASETS.add(DatasetEntry("digits", load_digits, lambda cfg: ((1, 8, 8), 10), DigitsConfig,
                          "digits"))


def _folder_classes(root: str | Path) -> int:
    train = Path(root) / "train"
    return len([d for d in train.iterdir() if d.is_dir()]) if train.is_dir() else 0


def shape_of(cfg) -> tuple[tuple[int, ...], int]:
    """(input shape (C, H, W), number of classes) of the data set a DatasetConfig names."""
    return DATASETS[cfg.name].shape(cfg)


def _decode(path: Path, channels: int, size: int) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2.functional import resize

    img = decode_image(read_file(str(path)), mode=ImageReadMode.RGB if channels == 3
                       else ImageReadMode.GRAY)
    return img if img.shape[1:] == (size, size) else resize(img, [size, size], antialias=True)


def _read_split(root: Path, classes: list[str], channels: int, size: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    files = [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).iterdir())
             if p.is_file()]
    if not files:
        raise FileNotFoundError(f"no images under {root}/<class>/")
    with ThreadPoolExecutor(max_workers=4) as pool:  # decoding releases the GIL
        images = list(pool.map(lambda f: _decode(f[0], channels, size), files))
    return torch.stack(images), torch.tensor([i for _, i in files], dtype=torch.long)


def load_image_folder(root: str | Path, image_size: int, channels: int, label: str) -> TensorData:
    """An image-folder tree (train/<class>/*, test/<class>/*), decoded once and cached as
    uint8 tensors in root/.tensors-<size>x<channels>.pt."""
    root = Path(root)
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise FileNotFoundError(f"{root} is not an image folder: it needs train/<class>/ and "
                                f"test/<class>/ subfolders")
    cache = root / f".tensors-{image_size}x{channels}.pt"
    if cache.is_file():
        t = torch.load(cache, weights_only=True)
    else:
        classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
        x_train, y_train = _read_split(root / "train", classes, channels, image_size)
        x_test, y_test = _read_split(root / "test", classes, channels, image_size)
        t = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
             "num_classes": len(classes),
             "digest": _digest([x_train.numpy().tobytes(), y_train.numpy().tobytes(),
                                x_test.numpy().tobytes(), y_test.numpy().tobytes()])}
        atomic_save(t, cache)
    scale = lambda x: x.float().div_(255)  # noqa: E731
    return TensorData(scale(t["x_train"]), t["y_train"], scale(t["x_test"]), t["y_test"],
                      int(t["num_classes"]), t["digest"], label)


@dataclass
class ImageFolderConfig(DatasetConfig):
    name: str = "image_folder"
    root: str | None = None  # a tree with train/<class>/ and test/<class>/
    image_size: int = 32  # images are resized to image_size x image_size
    channels: int = 3  # 3 (RGB) or 1 (grey)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.channels in (1, 3), f"dataset.channels must be one of [1, 3], got {self.channels}")
        check(self.image_size >= 1, f"dataset.image_size must be >= 1, got {self.image_size}")
        check(bool(self.root), "dataset.root must name an image folder (train/<class>/, "
              "test/<class>/) with dataset=image_folder")


def _check_image_folder(cfg) -> None:
    if not (Path(cfg.root) / "train").is_dir():
        raise FileNotFoundError(f"dataset.root={cfg.root} has no train/<class>/ folders")


DATASETS.add(DatasetEntry(
    "image_folder",
    lambda cfg: load_image_folder(cfg.root, cfg.image_size, cfg.channels, f"image folder {cfg.root}"),
    lambda cfg: ((cfg.channels, cfg.image_size, cfg.image_size), _folder_classes(cfg.root)),
    ImageFolderConfig, "image folder", _check_image_folder))


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
                      _digest([str(train.train_list), str(test.test_list)]), "CIFAR-10")


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
