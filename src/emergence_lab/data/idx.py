"""Idx data sets (MNIST, Fashion-MNIST, ...), read by torchvision's classes in their layout
(<data_dir>/<Class>/raw). The files are looked for in the data dir, then in local source dirs
(gunzipped into the data dir), then through torchvision's download; their uncompressed md5 sums
are checked every time. Adding one is one `idx_dataset(...)` entry (its own module) and one YAML."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from emergence_lab.data.base import DatasetConfig, DatasetEntry, TensorData, digest_of

log = logging.getLogger(__name__)


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


def idx_dataset(name: str, folder: str, md5s: dict[str, str], label: str, hint: str = "",
                shape: tuple[int, ...] = (1, 28, 28), classes: int = 10) -> DatasetEntry:
    """An idx data set that torchvision has a class for (`folder` is the class's name and its
    folder), with the md5 of each uncompressed file; `hint` says where to get the files."""

    def ensure(cfg) -> Path:
        return ensure_idx_files(name, folder, md5s, hint, cfg.data_dir, cfg.sources, cfg.download)

    def load(cfg) -> TensorData:
        import torchvision.datasets as tvd

        where = ensure(cfg)
        cls = getattr(tvd, folder)
        train = cls(root=cfg.data_dir, train=True, download=False)
        test = cls(root=cfg.data_dir, train=False, download=False)
        scale = lambda d: d.data.unsqueeze(1).float().div_(255)  # noqa: E731 - uint8 -> [0, 1]
        return TensorData(scale(train), train.targets.long(), scale(test), test.targets.long(),
                          len(train.classes), digest_of(sorted(md5s.values())), label,
                          source=str(Path(where).resolve()))

    return DatasetEntry(name, load, lambda cfg: (shape, classes), DatasetConfig, label, ensure)
