"""The landscape in runs, through the command line: a sweep with landscape=curvature logs its
keys at the landscape's epochs for every run; a landscape-only sweep over the cells finished
without it trains nothing and adds the same series from the weights the runs kept."""

from __future__ import annotations

import pandas as pd
import pytest

from emergence_lab.measure import keys
from tests.test_e2e import run_cli
from tests.test_measure_sweep import _history, _runs

pytestmark = pytest.mark.slow

BASE = ["-m", "dataset=digits", "pruning=magnitude", "pruning.amount=0,0.5", "pruning.epoch=1",
        "trainer.epochs=4", "model.hidden=[32,16]", "tracking.uri=sqlite:///x.db",
        "hydra.launcher.n_jobs=2"]
CURVATURE = (keys.LAMBDA_MAX, keys.TRACE, keys.TRACE_PER_PARAM)
FIVE = (*CURVATURE, keys.SLICE_MINIMA, keys.ROUGHNESS)


def test_a_curvature_sweep_logs_the_five_keys_at_the_pruning_epoch_the_next_and_the_last(
        tmp_path):
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    proc = run_cli([*BASE, "landscape=curvature", "landscape.probe_size=128"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(uri)
    assert len(runs) == 2
    for run in runs.values():
        for key in FIVE:
            assert [s for s, _ in _history(uri, run, key)] == [1, 2, 4], key
        trace = dict(_history(uri, run, keys.TRACE))
        per = dict(_history(uri, run, keys.TRACE_PER_PARAM))
        params = dict(_history(uri, run, keys.PARAMS))
        # per surviving parameter: the pruned run's count after its pruning step (epoch 1 is
        # measured before it)
        assert per[4] == pytest.approx(trace[4] / params[4], rel=1e-6)
        assert all(v > 0 for _, v in _history(uri, run, keys.LAMBDA_MAX))


def test_a_landscape_only_sweep_over_finished_cells_trains_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    first = run_cli(BASE, cwd=tmp_path)  # landscape=none: the weights are kept all the same
    assert first.returncode == 0, first.stderr[-3000:]
    before = _runs(uri)
    steps = {n: _history(uri, r, keys.TRAIN_LOSS) for n, r in before.items()}
    assert all(not _history(uri, r, keys.LAMBDA_MAX) for r in before.values())

    again = run_cli([*BASE, "landscape=full", "landscape.probe_size=128",
                     "landscape.plane_points=5", "landscape.points=11"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    logs = sorted(tmp_path.glob("outputs/multirun/*/*/train.log"))[-2:]
    assert all("from its kept weights (no training)" in p.read_text() for p in logs)
    after = _runs(uri)
    assert {r.info.run_id for r in after.values()} == {r.info.run_id for r in before.values()}
    for name, run in after.items():
        assert _history(uri, run, keys.TRAIN_LOSS) == steps[name]  # not one more training step
        for key in FIVE:
            assert [s for s, _ in _history(uri, run, key)] == [1, 2, 4], key

    # a third sweep: everything is there, nothing to do (the launcher's check, one query)
    third = run_cli([*BASE, "landscape=full", "landscape.probe_size=128",
                     "landscape.plane_points=5", "landscape.points=11"], cwd=tmp_path)
    assert third.returncode == 0 and "already finished" in third.stdout + third.stderr

    # the report: the landscape's table and figures (its plane beside the control's), the
    # landscape claims in claims.csv, all logged back to the store with the report run
    from emergence_lab.report.build import build_report
    from emergence_lab.store import artifacts, connection

    out = build_report(uri, out=str(tmp_path / "r"))
    md = (out / "report.md").read_text()
    assert "The loss landscape at the measured epochs" in md
    pngs = {p.name.split("__")[1] for p in out.glob("*.png")}
    assert {"landscape.png", "landscape_plane.png"} <= pngs
    claims = set(pd.read_csv(out / "claims.csv").claim)
    assert "pruning_raises_curvature_density" in claims
    client = connection.get_client(uri)
    exp = client.get_experiment_by_name("emergence")
    (rep,) = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'report'")
    logged = {a.path for a in client.list_artifacts(rep.info.run_id, "report")}
    assert any(p.endswith("landscape_plane.png") for p in logged)
    assert artifacts.artifact_names(uri, rep.info.run_id, "report")
