"""Any folder of images in train/<class>/ and test/<class>/ (conf/dataset/image_folder.yaml)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from emergence_lab.data.base import DATASETS, DatasetConfig, DatasetEntry, TensorData, digest_of
from emergence_lab.files import atomic_save
from emergence_lab.registry import check

log = logging.getLogger(__name__)


def _folder_classes(root: str | Path) -> int:
    train = Path(root) / "train"
    return len([d for d in train.iterdir() if d.is_dir()]) if train.is_dir() else 0


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
             "digest": digest_of([x_train.numpy().tobytes(), y_train.numpy().tobytes(),
                                x_test.numpy().tobytes(), y_test.numpy().tobytes()])}
        atomic_save(t, cache)
    scale = lambda x: x.float().div_(255)  # noqa: E731
    return TensorData(scale(t["x_train"]), t["y_train"], scale(t["x_test"]), t["y_test"],
                      int(t["num_classes"]), t["digest"], label, source=str(root.resolve()))


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
