"""A single-node SLURM cluster for the tests (scripts/slurm.sh) and what the SLURM tests do
with it: start a sweep on it, wait for its jobs' epochs, read its jobs' events and runs."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from emergence_lab.store import connection
from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "slurm.sh"


def _free_block(n: int = 4) -> int:
    """A first port of n consecutive ports on loopback that nothing listens on."""
    for _ in range(50):
        base = random.randrange(20000, 40000)
        with socket.socket() as s:
            if all(s.connect_ex(("127.0.0.1", base + i)) != 0 for i in range(n)):
                return base
    raise RuntimeError("no free block of ports")


def start_cluster() -> Iterator[Path]:
    """A SLURM cluster of this machine (the `cluster` fixture: one per test file); its
    slurm.conf, then stopped and removed."""
    folder = Path("/tmp") / f"emergence-lab-slurm-{os.getpid()}"
    result = subprocess.run([str(SCRIPT), "start", str(folder), str(_free_block())],
                            capture_output=True, text=True, timeout=900)
    if result.returncode == 3:  # the packages cannot be installed here
        pytest.skip(f"no SLURM cluster: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    yield folder / "slurm.conf"
    subprocess.run([str(SCRIPT), "stop", str(folder)], timeout=120)
    subprocess.run(["rm", "-rf", str(folder)])


def _env(conf: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": str(conf), **extra}


def sweep(conf: Path, tmp: Path, name: str, *overrides: str, env: dict | None = None,
          uri: str | None = None) -> subprocess.Popen:
    """A sweep on the cluster (its submitter, started). Batches of 8: an epoch takes a tenth
    of a second or more, so a job is mid-run when a signal reaches it."""
    uri = uri or f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    cmd = [sys.executable, "scripts/train.py", "-m", "hydra/launcher=slurm",
           "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.poll_s=0.5",
           "dataset=digits", "model.hidden=[32,16]", "trainer.batch_size=8",
           "trainer.device=cpu", "tracking.progress=false", f"tracking.uri={uri}",
           f"tracking.cache_dir={tmp / 'cache'}", f"hydra.sweep.dir={tmp / name}", *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, env=env or _env(conf), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def slurm(conf: Path, *args: str) -> str:
    return subprocess.run(args, env=_env(conf), capture_output=True, text=True, timeout=30,
                          check=True).stdout


def events(tmp: Path, name: str) -> dict[str, list[dict]]:
    """job id -> the events its job wrote."""
    return {p.name.split("_events")[0]: [json.loads(x) for x in p.read_text().splitlines() if x]
            for p in (tmp / name / ".submitit").glob("*/*_events.jsonl")}


def wait_epochs(tmp: Path, name: str, jobs: int, epochs: int, timeout: float = 120) -> dict:
    """Wait until `jobs` jobs have each trained `epochs` epochs; their events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = events(tmp, name)
        if sum(sum(e["kind"] == "epoch" for e in ev) >= epochs for ev in seen.values()) >= jobs:
            return seen
        time.sleep(0.3)
    raise AssertionError(f"{jobs} jobs did not train {epochs} epochs in {timeout} s: {seen}")


def runs(uri: str, **auth: str) -> list:
    client = connection.get_client(uri)
    exp = client.get_experiment_by_name("emergence")
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def cells(uri: str) -> list:
    return [r for r in runs(uri) if "config_hash" in r.data.tags]


def resumed_epoch(cluster: Path, tmp: Path, grid: tuple[str, ...], run_id: str) -> int:
    """Rerun the sweep until the KILLED run `run_id` trains its first epoch again; that epoch.
    Then the rerun is stopped (SIGTERM)."""
    before = set(events(tmp, "s"))
    proc = sweep(cluster, tmp, "s", *grid)
    deadline, epochs = time.monotonic() + 120, []
    while not epochs and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        epochs = [e["epoch"] for job, ev in events(tmp, "s").items() if job not in before
                  and any(e["kind"] == "run" and e["run_id"] == run_id for e in ev)
                  for e in ev if e["kind"] == "epoch"]
    proc.send_signal(signal.SIGTERM)
    finish(proc, timeout=60)
    assert epochs, "the rerun did not resume the run"
    return epochs[0]


def http_status(url: str, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:  # not listening yet
        return 0
