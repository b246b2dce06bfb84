"""Hydra's Ray launcher for real: a local Ray cluster started by the test runs the sweep's jobs
as Ray tasks, logging to the same store."""

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emergence_lab.store import sweeps
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_env(tmp_path):
    """Token authentication (Ray's default for local clusters since 2.59) with a token of the
    test's own, so that a token left in ~/.ray by an earlier Ray session plays no part."""
    token = tmp_path / "ray-token"
    token.write_text(secrets.token_hex(32))
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


@pytest.fixture
def ray_cluster(ray_env):
    ray = str(Path(sys.executable).parent / "ray")
    port = free_port()
    tmp = Path("/tmp") / f"ray-{port}"  # Ray's socket paths must stay short
    subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                    "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                    f"--temp-dir={tmp}"], check=True, capture_output=True, timeout=300, env=ray_env)
    yield f"127.0.0.1:{port}"
    subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120, env=ray_env)
    shutil.rmtree(tmp, ignore_errors=True)


def test_a_sweep_on_a_local_ray_cluster(ray_cluster, ray_env, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "hydra/launcher=ray_local",
         f"hydra.launcher.ray.init.address={ray_cluster}", "dataset=digits",
         "model.hidden=[16,8]", "trainer.epochs=2", "pruning=magnitude", "pruning.epoch=1",
         "pruning.amount=0,0.5", f"tracking.uri=sqlite:///{tmp_path / 'x.db'}",
         f"tracking.cache_dir={tmp_path / 'cache'}", "tracking.progress=false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, env=ray_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    parent = sweeps.latest_sweep(uri)
    children = sweeps.sweep_children(uri, parent.info.run_id)
    assert parent.info.status == "FINISHED"
    assert sorted(c.info.run_name for c in children) == [
        "digits-mlp-magnitude0-seed0", "digits-mlp-magnitude0.5-seed0"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.tags["prefix_cache"] for c in children) == ["hit", "miss"]
