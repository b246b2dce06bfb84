"""Identity, skip and resume: a rerun skips FINISHED cells and continues interrupted ones."""

import pytest

from emergence_lab.run import loop as train_mod
from emergence_lab.run import pipeline
from emergence_lab.store import records
from tests.conftest import compose_cfg


def interrupt_at(monkeypatch, call: int):
    """train_epoch raises KeyboardInterrupt (as Ctrl-C or SIGTERM would) on its call-th call."""
    calls = []
    real = train_mod.train_epoch

    def maybe_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt("test interrupt")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", maybe_interrupt)
    return calls


def only_runs(store):
    """The experiment's training runs (not the ledger run)."""
    return records.experiment_runs(store, "emergence")


@pytest.mark.parametrize("pruning", [["pruning=none"],
                                     ["pruning=iterative", "pruning.epoch=1", "pruning.steps=2"]])
def test_an_interrupted_run_resumes_in_place_and_ends_as_if_never_stopped(
        tiny_overrides, store, tmp_path, monkeypatch, pruning):
    overrides = tiny_overrides + pruning + ["trainer.epochs=5"]
    interrupt_at(monkeypatch, 4)  # epochs 1-3 complete, interrupted in epoch 4
    with pytest.raises(KeyboardInterrupt):
        pipeline.train(compose_cfg(overrides))
    (killed,) = only_runs(store)
    assert killed.info.status == "KILLED"
    monkeypatch.undo()
    resumed = pipeline.train(compose_cfg(overrides))
    (run,) = only_runs(store)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["resumed"] == "1"
    for key in ("train/loss", "test/acc", "emergence/E", "time/epoch_s"):
        steps = [s for s, _ in records.metric_history(store, run.info.run_id, key)]
        assert sorted(steps) == sorted(set(steps)) and steps[-1] == 5, (key, steps)
    elsewhere = [f"tracking.uri=sqlite:///{tmp_path / 'other.db'}"]
    through = pipeline.train(compose_cfg(overrides + elsewhere))
    for key in ("train/loss", "test/acc", "emergence/E", "pruning/sparsity"):
        assert resumed[key] == pytest.approx(through[key], rel=1e-6, abs=1e-9), key


def test_a_finished_cell_is_skipped_unless_forced(tiny_overrides, store, monkeypatch):
    first = pipeline.train(compose_cfg(tiny_overrides))
    calls = interrupt_at(monkeypatch, 10**9)  # counts epochs, never interrupts
    again = pipeline.train(compose_cfg(tiny_overrides))
    assert calls == [] and again["test/acc"] == first["test/acc"]
    assert len(only_runs(store)) == 1
    pipeline.train(compose_cfg(tiny_overrides + ["force=true"]))
    assert len(calls) == 3 and len(only_runs(store)) == 2
    # the identity is the config that shapes the result, not where or how it runs
    pipeline.train(compose_cfg(tiny_overrides + ["trainer.num_threads=1",
                                                  "trainer.checkpoints=false"]))
    assert len(calls) == 3 and len(only_runs(store)) == 2


def test_a_run_interrupted_before_pruning_resumes_from_its_prefix_checkpoint(
        tiny_overrides, store, monkeypatch):
    overrides = tiny_overrides + ["pruning=magnitude", "pruning.epoch=3", "pruning.amount=0.5",
                                  "trainer.epochs=4"]
    calls = interrupt_at(monkeypatch, 3)  # epochs 1 and 2 done and checkpointed
    with pytest.raises(KeyboardInterrupt):
        pipeline.train(compose_cfg(overrides))
    monkeypatch.undo()
    calls = interrupt_at(monkeypatch, 10**9)
    out = pipeline.train(compose_cfg(overrides))
    assert len(calls) == 2  # epochs 3 and 4 only
    (run,) = only_runs(store)
    assert run.info.status == "FINISHED" and out["pruning/sparsity"] == pytest.approx(0.5, abs=1e-3)
    steps = [s for s, _ in records.metric_history(store, run.info.run_id, "train/loss")]
    assert steps == [1, 2, 3, 4]
