"""Measure once, through the command line: a sweep that changes only the threshold group over
cells already trained trains nothing, and each run gains the new setting's series, equal to
what a run trained under that setting logs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from emergence_lab.measure import keys
from emergence_lab.store import connection, records
from tests.test_e2e import run_cli

pytestmark = pytest.mark.slow

BASE = ["-m", "dataset=digits", "pruning=magnitude", "pruning.amount=0,0.5", "pruning.epoch=1",
        "trainer.epochs=3", "model.hidden=[32,16]", "tracking.uri=sqlite:///x.db",
        "hydra.launcher.n_jobs=2"]


def _runs(uri: str) -> dict[str, object]:
    client = connection.get_client(uri)
    exp = client.get_experiment_by_name("emergence")
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("kind") != "sweep"}


def _history(uri: str, run, key: str) -> list[tuple[int, float]]:
    return sorted(records.metric_history(uri, run.info.run_id, key))


def test_a_threshold_sweep_over_trained_cells_trains_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    first = run_cli(BASE, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _runs(uri)
    assert len(before) == 2
    steps = {n: _history(uri, r, keys.TRAIN_LOSS) for n, r in before.items()}

    again = run_cli([*BASE, "threshold=dormant", "threshold.theta=0.5"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 finished (2 already)" in again.stderr + again.stdout  # the launcher's status
    logs = sorted(tmp_path.glob("outputs/multirun/*/*/train.log"))[-2:]  # each cell's job log
    assert all("from its stored measurements (no training)" in p.read_text() for p in logs)
    after = _runs(uri)
    assert set(after) == set(before)  # no new run
    assert {r.info.run_id for r in after.values()} == {r.info.run_id for r in before.values()}
    e_key, rel_key = keys.setting_keys(keys.Setting("dormant", 0.5, "units"))
    for name, run in after.items():
        assert _history(uri, run, keys.TRAIN_LOSS) == steps[name]  # not one more training step
        assert [s for s, _ in _history(uri, run, e_key)] == [0, 1, 2, 3]
        assert [s for s, _ in _history(uri, run, rel_key)] == [0, 1, 2, 3]
        edges = keys.setting_keys(keys.Setting("dormant", 0.5, "edges"))[0]
        assert len(_history(uri, run, edges)) == 4
        assert _history(uri, run, keys.E) == _history(uri, before[name], keys.E)  # unchanged

    # the same values a run trained under that setting logs itself
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    direct = run_cli([*BASE, "threshold=dormant", "threshold.theta=0.5"], cwd=fresh)
    assert direct.returncode == 0, direct.stderr[-3000:]
    trained = _runs(f"sqlite:///{fresh / 'x.db'}")
    for name, run in trained.items():
        assert _history(f"sqlite:///{fresh / 'x.db'}", run, e_key) == \
            [(s, v) for s, v in _history(uri, after[name], e_key)]

    # a third sweep asking the same again finds every cell finished with one store query and
    # launches no job (nothing logged twice)
    third = run_cli([*BASE, "threshold=dormant", "threshold.theta=0.5"], cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "2 of 2 cells already finished" in third.stdout
    assert "Launching" not in third.stdout + third.stderr
    for run in _runs(uri).values():
        assert len(_history(uri, run, e_key)) == 4


def test_a_run_without_stored_measurements_is_named_in_one_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    args = [a for a in BASE if not a.startswith("pruning.amount")] + ["pruning.amount=0"]
    assert run_cli(args, cwd=tmp_path).returncode == 0
    (run,) = _runs(uri).values()
    # a run logged before measurements were stored: its measurements folder is not there
    folder = Path(connection.get_client(uri).download_artifacts(run.info.run_id, "measurements",
                                                               str(tmp_path / "dl")))
    stored = next(p for p in (tmp_path / "artifacts").rglob("measurements") if p.is_dir())
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in stored.iterdir())
    shutil.rmtree(stored)
    proc = run_cli([*args, "threshold=fraction", "threshold.theta=0.1"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines()
             if "logged before runs stored their measurements" in ln]
    assert len(lines) == 1 and run.info.run_id in lines[0]
    assert set(_runs(uri)) == {run.info.run_name}  # nothing retrained, nothing added


def test_missing_or_damaged_stored_measurements_fail_their_cell_in_one_line(tmp_path):
    """A deleted measurement never leaves a series with a gap, an edited one (here another
    epoch's file: torch loads it) is never read as the run's: each cell fails in one line
    saying which file of which run, and no traceback names a temporary file."""
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    first = run_cli(BASE, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = sorted(_runs(uri).values(), key=lambda r: r.info.run_name)
    files = {r.info.run_id: sorted(tmp_path.glob(f"**/{r.info.run_id}/artifacts/measurements/"
                                                 f"epoch_*.pt")) for r in runs}
    gone = next(f for f in files[runs[0].info.run_id] if f.name.endswith("0002.pt"))
    gone.unlink()
    swapped = next(f for f in files[runs[1].info.run_id] if f.name.endswith("0001.pt"))
    swapped.write_bytes(files[runs[1].info.run_id][-1].read_bytes())  # well-formed: torch takes it
    again = run_cli([*BASE, "threshold=dormant", "threshold.theta=0.5"], cwd=tmp_path)
    out = again.stderr + again.stdout
    assert again.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert "2 of 2 cells did not finish" in out and "Redo with:" in out
    assert "lacks the stored measurements of epochs [2] (measurements/epoch_0002.pt)" in out
    said = [ln for ln in out.splitlines() if "measurements/epoch_0001.pt is not the file it "
            "stored: its sha256" in ln]
    assert said and runs[1].info.run_id in said[0] and "/tmp" not in said[0], out[-3000:]
    e_key = keys.setting_keys(keys.Setting("dormant", 0.5, "units"))[0]
    for run in runs:  # no series with a gap, no part of one
        assert _history(uri, run, e_key) == []
