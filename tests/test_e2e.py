"""The command line as a user runs it: real Hydra multiruns (joblib, 2 jobs) into a SQLite store."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emergence_lab.store import connection, records, sweeps
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def run_cli(args, cwd, **env_extra):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **env_extra}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=env)


def test_multirun_logs_one_parent_and_finished_children(tmp_path):
    proc = run_cli(["-m", "dataset=digits", "pruning=magnitude", "pruning.amount=0,0.5",
                    "pruning.epoch=1", "trainer.epochs=3", "tracking.uri=sqlite:///x.db",
                    "model.hidden=[64,32]", "hydra.launcher.n_jobs=2"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    client = connection.get_client(uri)
    exp = client.get_experiment_by_name("emergence")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    env = Path(client.download_artifacts(parents[0].info.run_id, "environment/requirements.txt"))
    assert "\ntorch==2.14.1" in env.read_text() and "\nmlflow==" in env.read_text()
    children = sweeps.sweep_children(uri, parents[0].info.run_id)
    assert sorted(c.info.run_name for c in children) == [
        "digits-mlp-magnitude0-seed0", "digits-mlp-magnitude0.5-seed0"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.tags["prefix_cache"] for c in children) == ["hit", "miss"]
    keys = ["train/loss", "train/acc", "test/loss", "test/acc", "emergence/E",
            "emergence/relative", "emergence/active_frac/blocks.0.1", "pruning/sparsity",
            "params/nonzero", "time/epoch_s"]
    for child in children:
        for key in keys:
            steps = [s for s, _ in records.metric_history(uri, child.info.run_id, key)]
            assert steps[-3:] == [1, 2, 3] and len(steps) == len(set(steps)), (key, steps)
        overrides = client.download_artifacts(child.info.run_id, "overrides.txt")
        assert "pruning.epoch=1" in Path(overrides).read_text()
        log = Path(client.download_artifacts(child.info.run_id, "logs/train.log"))  # its job log
        assert f"{child.info.run_name} epoch 3" in log.read_text()
    assert (tmp_path / "artifacts").is_dir()  # artifacts next to the store


def test_a_bad_value_anywhere_in_the_sweep_fails_before_any_run(tmp_path):
    proc = run_cli(["-m", "dataset=digits", "pruning=magnitude", "pruning.amount=0,1.5",
                    "tracking.uri=sqlite:///x.db"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "pruning.amount must be in [0, 1), got 1.5" in proc.stderr
    assert not (tmp_path / "x.db").exists()  # no store, no run


def test_a_failing_job_is_failed_in_mlflow_and_the_sweep_exits_nonzero(tmp_path):
    proc = run_cli(["-m", "dataset=digits", "trainer.lr=1e30,0.01", "trainer.epochs=2",
                    "model.hidden=[16,8]", "tracking.uri=sqlite:///x.db"], cwd=tmp_path)
    assert proc.returncode != 0
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    client = connection.get_client(uri)
    runs = client.search_runs([client.get_experiment_by_name("emergence").experiment_id])
    by_status = sorted((r.data.tags.get("kind", "run"), r.info.status) for r in runs)
    assert by_status == [("run", "FAILED"), ("run", "FINISHED"), ("sweep", "FAILED")]
    failed = next(r for r in runs if r.info.status == "FAILED" and "error" in r.data.tags)
    assert "diverged" in failed.data.tags["error"]


def test_single_run_has_no_parent(tmp_path):
    proc = run_cli(["dataset=digits", "trainer.epochs=1", "model.hidden=[16,8]",
                    "tracking.uri=sqlite:///x.db"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = connection.get_client(f"sqlite:///{tmp_path / 'x.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("emergence").experiment_id])
    assert run.info.status == "FINISHED" and sweeps.PARENT_TAG not in run.data.tags


def test_a_diverged_single_run_ends_in_one_line_and_its_failed_run(tmp_path):
    proc = run_cli(["dataset=digits", "trainer.epochs=2", "model.hidden=[16,8]", "trainer.lr=1e30",
                    "tracking.uri=sqlite:///x.db"], cwd=tmp_path)
    client = connection.get_client(f"sqlite:///{tmp_path / 'x.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("emergence").experiment_id])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: run {run.info.run_id} FAILED: FloatingPointError: train/loss is nan at epoch 1: "
        f"training diverged (trainer.lr=1e+30)")
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("FloatingPointError")


def test_an_optuna_search_runs_under_one_parent_and_reports_its_best(tmp_path):
    """Any sweeper works, not only the basic grid: Optuna searches init.alpha (the emergence init's
    scale) that maximizes test accuracy after 1 epoch; each trial is a run of the parent."""
    proc = run_cli(["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
                    "hydra.sweeper.n_jobs=1", "hydra.sweeper.direction=maximize",
                    "hydra.sweeper.sampler.seed=0", "init.alpha=interval(1.0,2.0)",
                    "init=emergence", "dataset=digits", "model.hidden=[32,16]", "trainer.epochs=1",
                    "tracking.uri=sqlite:///x.db", "tracking.progress=false"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    client = connection.get_client(uri)
    runs = client.search_runs([client.get_experiment_by_name("emergence").experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = sweeps.sweep_children(uri, parents[0].info.run_id)
    alphas = sorted(float(c.data.params["init.alpha"]) for c in children)
    assert len(alphas) == 2 and len(set(alphas)) == 2 and all(1 <= a <= 2 for a in alphas)
    assert all(c.info.status == "FINISHED" for c in children)
    best = next(tmp_path.glob("outputs/multirun/*/optimization_results.yaml")).read_text()
    assert "best_params" in best and "init.alpha" in best


def test_a_custom_residual_model_sweeps_with_structured_pruning_and_a_bad_one_fails_first(tmp_path):
    """model=custom through the whole pipeline: a user's residual MLP, pruned by Torch-Pruning's
    coupled groups, E logged every epoch; a model whose forward branches on data fails the
    sweep before any run."""
    path = {"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = run_cli(["-m", "dataset=digits", "model=custom",
                    "model._target_=tests.fixtures.custom_net.ResidualMLP",
                    "+model.kwargs.width=8", "pruning=structured", "pruning.amount=0,0.5",
                    "pruning.epoch=1", "trainer.epochs=2", "tracking.uri=sqlite:///x.db"],
                   cwd=tmp_path, **path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    runs = connection.get_client(uri).search_runs(
        [connection.get_client(uri).get_experiment_by_name("emergence").experiment_id])
    children = [r for r in runs if r.data.tags.get("kind") != "sweep"]
    assert sorted(r.info.run_name for r in children) == [
        "digits-ResidualMLP-structured0-seed0", "digits-ResidualMLP-structured0.5-seed0"]
    for r in children:
        assert r.info.status == "FINISHED"
        steps = [s for s, _ in records.metric_history(uri, r.info.run_id, "emergence/E")]
        assert steps[-2:] == [1, 2]
    pruned = next(r for r in children if r.info.run_name.endswith("0.5-seed0"))
    assert pruned.data.metrics["params/nonzero"] < min(
        r.data.metrics["params/nonzero"] for r in children if r is not pruned)
    bad = run_cli(["dataset=digits", "model=custom",
                   "model._target_=tests.fixtures.custom_net.Branchy",
                   "tracking.uri=sqlite:///y.db"], cwd=tmp_path, **path)
    assert bad.returncode != 0
    assert "Branchy" in bad.stderr and "data-dependent control flow" in bad.stderr
    assert not (tmp_path / "y.db").exists()
