"""Shared fixtures: composed Hydra configs for tiny runs and a temporary SQLite store."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from emergence_lab.config import register_configs
from emergence_lab.sweep.worker import THREAD_VARS, thread_share

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_MNIST = ROOT.parent / "shared" / "datasets" / "mnist"

register_configs()

# Under pytest-xdist the workers share the machine's cores, as the launcher's workers do: each
# takes its share (torch's default, every core, spins OpenMP threads against the other
# workers: SynFlow on ResNet-56 took 65 s beside another worker where alone it takes 5 s).
# Command lines a test starts inherit the share; a sweep's launcher still splits the cores
# among its own workers.
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if XDIST_WORKERS > 1:
    _share = thread_share(XDIST_WORKERS)
    torch.set_num_threads(_share)
    for _var in THREAD_VARS:
        os.environ.setdefault(_var, str(_share))


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def corrupt_mnist_copy(data_dir: Path, offset: int = 100) -> Path:
    """MNIST from ../shared uncompressed into data_dir/MNIST/raw, one byte of a file changed."""
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in SHARED_MNIST.glob("*.gz"):
        with gzip.open(f, "rb") as fin, open(raw / f.name[:-3], "wb") as fout:
            shutil.copyfileobj(fin, fout)
    with open(raw / "t10k-labels-idx1-ubyte", "r+b") as f:
        f.seek(offset)
        f.write(bytes([(f.read(1)[0] + 1) % 256]))
    return raw


def compose_cfg(overrides: list[str], hydra: bool = False) -> DictConfig:
    """The job config Hydra would build for these overrides (with the hydra node if asked)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A tracking URI for a fresh SQLite store in a temporary folder."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture
def tiny_overrides(store: str, tmp_path: Path) -> list[str]:
    """A digits run small enough for the fast suite."""
    return ["dataset=digits", "model.hidden=[32,16]", "trainer.epochs=3", "trainer.lr=0.05",
            "trainer.batch_size=32", "trainer.device=cpu", f"tracking.uri={store}",
            "tracking.progress=false", f"tracking.cache_dir={tmp_path / 'cache'}"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A single-node SLURM cluster for one test file (tests/slurm_cluster.py); its slurm.conf."""
    from tests.slurm_cluster import start_cluster

    yield from start_cluster()
