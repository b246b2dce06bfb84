import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emergence_lab import data
from emergence_lab.config import validate
from emergence_lab.data import idx
from tests.conftest import SHARED_MNIST, compose_cfg, corrupt_mnist_copy


def digits_cfg(**kw):
    return SimpleNamespace(name="digits", split_seed=0, test_fraction=0.2, **kw)


def test_digits_split_is_fixed_and_disjoint():
    a, b = data.load_dataset(digits_cfg()), data.load_dataset(digits_cfg())
    assert a.x_train.shape == (1438, 1, 8, 8) and a.x_test.shape == (359, 1, 8, 8)
    assert torch.equal(a.x_test, b.x_test) and a.digest == b.digest
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    other = data.load_dataset(SimpleNamespace(name="digits", split_seed=1, test_fraction=0.2))
    assert not torch.equal(a.x_test, other.x_test) and a.digest != other.digest


def test_digits_are_scikit_learns_read_without_importing_it():
    """The file is read directly (importing scikit-learn costs every worker a second), and
    the arrays are load_digits' own, so the data's digest, and every run's identity, stay."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from emergence_lab.data.digits import read_digits

    images, labels = read_digits()
    ref = load_digits()
    assert np.array_equal(images, ref.images) and np.array_equal(labels, ref.target)
    assert images.dtype == ref.images.dtype and labels.dtype == ref.target.dtype
    code = ("import sys; from emergence_lab import data; from types import SimpleNamespace as N;"
            "data.load_dataset(N(name='digits', split_seed=0, test_fraction=0.2));"
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_probe_is_a_fixed_seeded_subset_of_the_training_set():
    d = data.load_dataset(digits_cfg())
    p1, p2, p3 = d.probe(100, seed=0), d.probe(100, seed=0), d.probe(100, seed=1)
    assert p1.shape == (100, 1, 8, 8) and torch.equal(p1, p2) and not torch.equal(p1, p3)
    rows = {tuple(r.flatten().tolist()) for r in d.x_train}
    assert all(tuple(r.flatten().tolist()) in rows for r in p1)
    assert d.probe(10_000, seed=0).shape[0] == d.x_train.shape[0]


def mnist_cfg(tmp_path, sources, download=False):
    return SimpleNamespace(name="mnist", data_dir=str(tmp_path / "data"), sources=sources,
                           download=download)


needs_mnist = pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/datasets/mnist absent")


@needs_mnist
def test_mnist_from_a_local_source_is_gunzipped_and_verified(tmp_path):
    d = data.load_dataset(mnist_cfg(tmp_path, [str(SHARED_MNIST)]))
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.num_classes == 10 and d.y_train.dtype == torch.long
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert idx.md5sum(raw / "t10k-labels-idx1-ubyte") == "27ae3e4e09519cfbb04c329615203637"
    # second load: found in the data dir, sources no longer needed
    again = data.load_dataset(mnist_cfg(tmp_path, []))
    assert torch.equal(again.y_test, d.y_test)


@needs_mnist
def test_a_corrupt_file_is_named(tmp_path):
    corrupt_mnist_copy(tmp_path / "data")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte is corrupt: md5 .*expected 27ae3e"):
        data.load_dataset(mnist_cfg(tmp_path, []))


def test_missing_offline_names_the_ways_to_get_the_data(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset(mnist_cfg(tmp_path, [str(tmp_path / "nowhere")]))
    msg = str(err.value)
    assert "dataset.sources" in msg and "nowhere" in msg and "dataset.download=true" in msg


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets as tvd

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(FileNotFoundError, match=r"(?s)Ways to get them.*download failed \(URLError"):
        data.load_dataset(mnist_cfg(tmp_path, [], download=True))


def test_fashion_mnist_error_mentions_the_debian_package(tmp_path):
    cfg = SimpleNamespace(name="fashion_mnist", data_dir=str(tmp_path), sources=[], download=False)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_dataset(cfg)


def write_image_tree(root, classes=("cat", "dog"), per_class=(3, 2), size=6):
    """A tiny image folder: PNGs whose pixel values encode class and index."""
    from torchvision.io import write_png

    for split, n in zip(("train", "test"), per_class, strict=True):
        for ci, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = torch.full((3, size, size), 40 * ci + 10 * i, dtype=torch.uint8)
                write_png(img, str(root / split / c / f"{i:04d}.png"))


def test_image_folder_is_decoded_once_and_cached(tmp_path):
    write_image_tree(tmp_path / "tree")
    cfg = SimpleNamespace(name="image_folder", root=str(tmp_path / "tree"), image_size=4, channels=3)
    d = data.load_dataset(cfg)
    assert d.x_train.shape == (6, 3, 4, 4) and d.x_test.shape == (4, 3, 4, 4)
    assert d.y_train.tolist() == [0, 0, 0, 1, 1, 1] and d.num_classes == 2
    assert d.x_train[4, 0, 0, 0].item() == pytest.approx(50 / 255)  # dog, image 1
    assert (tmp_path / "tree" / ".tensors-4x3.pt").is_file()
    shutil.rmtree(tmp_path / "tree" / "train" / "cat")  # the cache is read, not the files
    assert torch.equal(data.load_dataset(cfg).x_train, d.x_train)
    grey = data.load_dataset(SimpleNamespace(**{**vars(cfg), "channels": 1}))
    assert grey.x_train.shape[1] == 1


def test_cifar10_offline_falls_back_to_the_jpeg_copy_and_says_so(tmp_path):
    import tarfile

    write_image_tree(tmp_path / "src" / "tree", classes=("airplane", "automobile"))
    sources = tmp_path / "sources"
    sources.mkdir()
    with tarfile.open(sources / "cifar10-jpeg75.tar.gz", "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(tmp_path / "src" / "tree" / split, arcname=split)
    cfg = SimpleNamespace(name="cifar10", data_dir=str(tmp_path / "data"), sources=[str(sources)],
                          download=False)
    d = data.load_dataset(cfg)
    assert d.label == "CIFAR-10 (JPEG q75)"
    assert d.x_train.shape == (6, 3, 32, 32)  # resized to CIFAR's 32 x 32
    assert (tmp_path / "data" / "cifar10-jpeg75" / "train" / "airplane").is_dir()


def test_cifar10_with_nothing_names_the_ways(tmp_path):
    cfg = SimpleNamespace(name="cifar10", data_dir=str(tmp_path), sources=[], download=False)
    with pytest.raises(FileNotFoundError, match=r"(?s)cifar10: no data.*download=true.*tar.gz"):
        data.load_dataset(cfg)


def test_normalize_standardizes_each_channel_with_the_training_statistics():
    from emergence_lab.data import load_dataset

    plain = load_dataset(validate(compose_cfg(["dataset=digits"])).dataset)
    std = load_dataset(validate(compose_cfg(["dataset=digits", "dataset.normalize=true"])).dataset)
    assert std.x_train.mean().abs().item() < 1e-5
    assert std.x_train.std().item() == pytest.approx(1.0, abs=1e-3)
    mean, sd = plain.x_train.mean(), plain.x_train.std()
    assert torch.allclose(std.x_test, (plain.x_test - mean) / sd, atol=1e-5)  # the train's numbers
    assert "standardized" in std.label
