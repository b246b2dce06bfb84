"""A run filled in the way MLflow users expect (issue 36): its data set as an MLflow dataset
input, its source and user, the code's state, the best accuracy so far (a sweep's run keeps its
job log too: tests/test_e2e.py)."""

from __future__ import annotations

import json
from pathlib import Path

from emergence_lab.run import pipeline
from emergence_lab.store import artifacts, connection, records
from tests.conftest import compose_cfg


def _only_run(uri: str):
    client = connection.get_client(uri)
    exp = client.get_experiment_by_name("emergence")
    (run,) = client.search_runs([exp.experiment_id])
    return run


def test_a_run_carries_its_dataset_source_user_and_best_accuracy(tiny_overrides, store):
    prune = ["pruning=magnitude", "pruning.epoch=1", "pruning.amount=0.5"]
    pipeline.train(compose_cfg(tiny_overrides + prune))
    run = _only_run(store)
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "digits" and len(inp.dataset.digest) == 32
    assert json.loads(inp.dataset.source)["uri"] == "sklearn.datasets.load_digits"
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
    assert json.loads(inp.dataset.profile)["train"] > 0
    tags = run.data.tags
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
    assert tags["mlflow.user"] and tags["git_dirty"] in ("true", "false")
    # no bookkeeping among the params (MLflow's Compare shows them as hyperparameters): the
    # owner's lease is a tag
    assert not [k for k in run.data.params if k.startswith("lease")]
    assert tags["owner.lease"].startswith("1 ") and tags["owner"] in tags["owner.lease"]
    acc = dict(records.metric_history(store, run.info.run_id, "test/acc"))
    best = records.metric_history(store, run.info.run_id, "test/acc_best")
    # the running max of the final network's trained epochs: after the pruning step at 1
    assert [s for s, _ in best] == [2, 3]
    assert best[-1][1] == max(acc[s] for s in (2, 3)) and best[0][1] == acc[2]
    assert all(b >= a for (_, a), (_, b) in zip(best, best[1:], strict=False))


def test_system_metrics_and_a_logged_model_that_mlflow_loads_back(tiny_overrides, store,
                                                                   monkeypatch):
    import mlflow.pytorch
    import torch

    from emergence_lab.prune.masks import sparsity

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.05")  # default: 10 s
    prune = ["pruning=magnitude", "pruning.epoch=1", "pruning.amount=0.5",
             "tracking.log_model=true", "tracking.system_metrics=true"]
    pipeline.train(compose_cfg(tiny_overrides + prune))
    run = _only_run(store)
    (out,) = run.outputs.model_outputs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # where models:/ URIs are looked up
    model = mlflow.pytorch.load_model(f"models:/{out.model_id}")
    assert sparsity(model) == run.data.metrics["pruning/sparsity"]  # the masks came back too
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)
    assert any(k.startswith("system/cpu") for k in run.data.metrics), sorted(run.data.metrics)


def test_a_run_from_an_edited_tree_is_flagged_dirty_and_keeps_the_diff(tiny_overrides, store,
                                                                        monkeypatch, tmp_path):
    from emergence_lab.run import plan as plan_mod

    diff = "diff --git a/src/x.py b/src/x.py\n-old\n+new\n"
    monkeypatch.setattr(plan_mod, "code_state", lambda: "dirty:0123456789ab")
    monkeypatch.setattr(pipeline, "code_diff", lambda: diff)
    pipeline.train(compose_cfg(tiny_overrides))
    run = _only_run(store)
    assert run.data.tags["git_dirty"] == "true" and run.data.tags["git_state"].startswith("dirty")
    got = artifacts.download_artifact(store, run.info.run_id, "code/git_diff.patch", tmp_path)
    assert Path(got).read_text() == diff


def test_a_data_set_another_run_creates_at_the_same_moment_is_linked_on_the_next_try(store):
    """On a tracking server two runs logging one new data set race in MLflow's get-or-create
    (a unique-key violation): the next try links the winner's; the run goes on either way."""
    with records.Run(store, "emergence", "r", {}) as run:
        real, calls = run.client.log_inputs, []

        def racing(run_id, datasets=None, **kw):
            calls.append(run_id)
            if len(calls) == 1:
                raise RuntimeError('duplicate key value violates unique constraint "dataset_pk"')
            return real(run_id, datasets=datasets, **kw)

        run.client.log_inputs = racing
        run.log_dataset("digits", "d" * 32, "somewhere")
    got = connection.get_client(store).get_run(run.run_id).inputs.dataset_inputs
    assert len(calls) == 2 and [d.dataset.name for d in got] == ["digits"]
