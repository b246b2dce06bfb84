"""sweep.dry_run (what a sweep would do, nothing written) and sweep.max_failures (no new cell
after N failed ones), through the command line as a user runs them."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from emergence_lab.store import connection
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

BASE = ["dataset=digits", "model.hidden=[16,8]", "trainer.epochs=2", "trainer.lr=0.05",
        "pruning=magnitude", "pruning.epoch=1", "tracking.uri=sqlite:///s/mlflow.db",
        "hydra.launcher.n_jobs=1"]


def _cli(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "-m", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def _snapshot(folder):
    return {p.relative_to(folder): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_dry_run_lists_the_cells_by_state_and_leaves_the_store_as_it_was(tmp_path):
    done = _cli([*BASE, "pruning.amount=0,0.5"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    before, outputs = _snapshot(tmp_path / "s"), _snapshot(tmp_path)
    dry = _cli([*BASE, "pruning.amount=0,0.5,0.7", "trainer.seed=0,1", "sweep.dry_run=true"],
               tmp_path)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "Dry run of 6 cells" in dry.stdout and "2 finished, 0 running elsewhere, 4 new" \
        in dry.stdout, dry.stdout
    assert "digits-mlp-magnitude0.5-seed0" in dry.stdout  # a finished cell by its run's name
    assert "estimated time: ~" in dry.stdout and "median epoch" in dry.stdout
    assert _snapshot(tmp_path / "s") == before  # not a byte of the store changed
    assert _snapshot(tmp_path) == outputs  # nor anything else: no sweep dir, no lock


def test_no_new_cell_starts_after_max_failures(tmp_path):
    # the first two cells diverge (FAILED); with max_failures=1 the others never start
    proc = _cli([*BASE, "pruning.amount=0", "trainer.lr=1e30,1e31,0.01,0.02",
                 "sweep.max_failures=1"], tmp_path)
    assert proc.returncode != 0
    assert "Stopped after 1 failed cells (sweep.max_failures=1): 3 cells were not started" \
        in proc.stderr, proc.stderr[-3000:]
    assert "3 of 4 cells did not finish" not in proc.stderr  # the failed one counts too
    assert "4 of 4 cells did not finish" in proc.stderr and "Redo with:" in proc.stderr
    uri = f"sqlite:///{tmp_path / 's' / 'mlflow.db'}"
    client = connection.get_client(uri)
    runs = client.search_runs([client.get_experiment_by_name("emergence").experiment_id])
    assert sorted(r.info.status for r in runs if r.data.tags.get("kind") != "sweep") == ["FAILED"]


def test_max_failures_is_refused_by_a_launcher_that_cannot_honour_it(tmp_path):
    base = [a for a in BASE if not a.startswith("hydra.launcher.")]
    proc = _cli([*base, "pruning.amount=0", "sweep.max_failures=1", "hydra/launcher=basic"],
                tmp_path)
    assert proc.returncode != 0 and "sweep.max_failures=1 is honoured by" in proc.stderr
    assert not (tmp_path / "s").exists()
