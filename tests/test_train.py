"""train() end to end on digits, in-process: the shared pre-prune state, determinism, FAILED runs."""

import re

import pytest
import torch

from emergence_lab.models.mlp import MLP
from emergence_lab.prune.masks import sparsity
from emergence_lab.run import loop as train_mod
from emergence_lab.run import pipeline, plan
from emergence_lab.run.checkpoint import load_checkpoint
from emergence_lab.store import connection, records
from tests.conftest import compose_cfg


@pytest.fixture
def count_epochs(monkeypatch):
    """Counts calls of train_epoch: the training steps a run actually takes."""
    calls = []
    real = train_mod.train_epoch

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", counting)
    return calls


def runs_by_name(uri):
    client = connection.get_client(uri)
    exp = client.get_experiment_by_name("emergence")
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def test_sibling_reuses_the_shared_prefix(tiny_overrides, store, count_epochs):
    prune = ["pruning=magnitude", "pruning.epoch=2"]
    first = pipeline.train(compose_cfg(tiny_overrides + prune + ["pruning.amount=0"]))
    assert len(count_epochs) == 3  # trained epochs 1, 2 (prefix) and 3
    second = pipeline.train(compose_cfg(tiny_overrides + prune + ["pruning.amount=0.5"]))
    assert len(count_epochs) == 4  # only epoch 3: the prefix came from the cache
    assert second["pruning/sparsity"] == pytest.approx(0.5, abs=1e-3)

    runs = runs_by_name(store)
    a, b = runs["digits-mlp-magnitude0-bs32-seed0"], runs["digits-mlp-magnitude0.5-bs32-seed0"]
    assert (a.data.tags["prefix_cache"], b.data.tags["prefix_cache"]) == ("miss", "hit")
    threads = {r: records.metric_history(store, r.info.run_id, "time/threads") for r in (a, b)}
    assert [s for s, _ in threads[a][:2]] == [1, 2] and all(t >= 1 for _, t in threads[a])
    assert threads[b][:2] == threads[a][:2]  # the shared epochs' threads, replayed from the cache
    hist = {r: records.metric_history(store, r.info.run_id, "emergence/E") for r in (a, b)}
    assert [s for s, _ in hist[b]] == [0, 1, 2, 3]  # the whole curve from step 0
    assert hist[a][:3] == hist[b][:3]  # identical up to the prune epoch
    assert first["test/acc"] != second["test/acc"] or first["emergence/E"] != second["emergence/E"]


def test_a_run_from_the_cache_continues_exactly_like_one_trained_through(tiny_overrides, tmp_path):
    prune = ["pruning=magnitude", "pruning.epoch=2", "pruning.amount=0.3"]
    through = pipeline.train(compose_cfg(tiny_overrides + prune))
    again = prune + ["force=true"]  # not skipped although the cell has FINISHED
    cached = pipeline.train(compose_cfg(tiny_overrides + again))  # same key: loads the state
    other_cache = [f"tracking.cache_dir={tmp_path / 'elsewhere'}"]
    fresh = pipeline.train(compose_cfg(tiny_overrides + again + other_cache))
    for key in ("test/acc", "test/loss", "train/loss", "emergence/E"):
        assert through[key] == cached[key] == fresh[key], key


def test_checkpoints_are_artifacts_with_masks(tiny_overrides, store):
    pipeline.train(compose_cfg(tiny_overrides + ["pruning=magnitude", "pruning.epoch=1",
                                                  "pruning.amount=0.7"]))
    run = next(iter(runs_by_name(store).values()))
    client = connection.get_client(store)
    names = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert names == {"checkpoints/last.pt", "checkpoints/best.pt"}
    local = client.download_artifacts(run.info.run_id, "checkpoints/last.pt")
    model = MLP(in_shape=(1, 8, 8), num_classes=10, hidden=[32, 16])
    payload = load_checkpoint(local, model)
    assert payload["epoch"] == 3
    assert sparsity(model) == pytest.approx(0.7, abs=1e-3)
    assert (model.blocks[0][0].weight == 0).float().mean().item() > 0.3


def test_every_metric_once_per_epoch(tiny_overrides, store):
    pipeline.train(compose_cfg(tiny_overrides + ["pruning=magnitude", "pruning.epoch=1",
                                                  "pruning.amount=0.5"]))
    run = next(iter(runs_by_name(store).values()))
    per_epoch = ["train/loss", "train/acc", "time/epoch_s"]
    with_init = ["test/loss", "test/acc", "emergence/E", "emergence/relative",
                 "emergence/active_frac/blocks.0.1", "emergence/active_frac/blocks.1.1",
                 "pruning/sparsity", "params/nonzero"]
    for key in per_epoch:
        assert [s for s, _ in records.metric_history(store, run.info.run_id, key)] == [1, 2, 3]
    for key in with_init:
        assert [s for s, _ in records.metric_history(store, run.info.run_id, key)] == [0, 1, 2, 3]
    assert run.data.params["pruning.amount"] == "0.5"
    assert run.data.tags["config_hash"] and run.data.tags["data_digest"]


def test_a_diverging_run_is_marked_failed_with_its_reason(tiny_overrides, store):
    with pytest.raises(FloatingPointError, match="diverged"):
        pipeline.train(compose_cfg(tiny_overrides + ["trainer.lr=1e30"]))
    run = next(iter(runs_by_name(store).values()))
    assert run.info.status == "FAILED"
    assert re.search(r"FloatingPointError: train/loss is (nan|inf)", run.data.tags["error"])


def test_device_auto_and_explicit():
    assert plan.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert plan.resolve_device("auto").type == expected


def metric_steps(store, run, key):
    return [s for s, _ in records.metric_history(store, run.info.run_id, key)]


def test_iterative_pruning_prunes_on_schedule(tiny_overrides, store):
    out = pipeline.train(compose_cfg(tiny_overrides + [
        "pruning=iterative", "pruning.amount=0.75", "pruning.epoch=1", "pruning.steps=2",
        "pruning.interval=1", "trainer.epochs=3"]))
    run = next(iter(runs_by_name(store).values()))
    assert run.info.run_name == "digits-mlp-magnitude0.75x2-bs32-seed0"
    after = records.metric_history(store, run.info.run_id, "pruning/sparsity_after")
    assert [s for s, _ in after] == [1, 2]
    assert after[0][1] == pytest.approx(0.5, abs=2e-3) and after[1][1] == pytest.approx(0.75, abs=2e-3)
    assert out["pruning/sparsity"] == pytest.approx(0.75, abs=2e-3)


def test_structured_pruning_shrinks_the_counted_layers(tiny_overrides, store):
    out = pipeline.train(compose_cfg(tiny_overrides + [
        "pruning=structured", "pruning.amount=0.5", "pruning.epoch=1", "threshold.theta=0"]))
    # theta 0: every surviving unit with a positive mean is active; removed units are not counted
    run = next(iter(runs_by_name(store).values()))
    nonzero = dict(records.metric_history(store, run.info.run_id, "params/nonzero"))
    # 64 inputs, hidden [32, 16]: half the units of each hidden layer go with what reads them
    assert nonzero[0] == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert nonzero[3] == 64 * 16 + 16 + 16 * 8 + 8 + 8 * 10 + 10
    assert 0 < out["emergence/active_frac/blocks.0.1"] <= 1


def test_theta_grid_is_logged_from_the_same_activations(tiny_overrides, store):
    out = pipeline.train(compose_cfg(tiny_overrides + ["threshold.grid=[0,0.05,0.5]"]))
    assert out["emergence/E_theta/0.05"] == out["emergence/E"]  # the run's own theta
    assert {"emergence/E_theta/0", "emergence/E_theta/0.5",
            "emergence/relative_theta/0.5"} <= set(out)


def test_both_activity_modes_and_the_sparsity_baselines_are_logged(tiny_overrides, store):
    out = pipeline.train(compose_cfg(tiny_overrides + ["threshold=fraction",
                                                        "threshold.grid=[0.05]"]))
    # the run's own setting under its keys, the paper's as emergence/E, the grid beside them
    assert out["emergence/E_theta_fraction/0.05"] == out["emergence/E/fraction/0.05/units"]
    assert out["emergence/E_theta/0.05"] == out["emergence/E"]
    assert out["emergence/E/fraction/0.05/edges"] == out["emergence/E/fraction/0.05/units"]  # unpruned
    for key in ("sparsity/dead_frac", "sparsity/zero_frac", "sparsity/dormant_frac/0.1"):
        assert 0 <= out[key] <= 1


def test_lr_after_prune_takes_over_at_the_pruning_step(tiny_overrides, store):
    pipeline.train(compose_cfg(tiny_overrides + [
        "pruning=magnitude", "pruning.epoch=1", "pruning.amount=0.5",
        "trainer.lr_after_prune=0.0123"]))
    run = next(iter(runs_by_name(store).values()))
    assert "-magnitude0.5-lr0.0123-" in run.info.run_name
    local = connection.get_client(store).download_artifacts(run.info.run_id, "checkpoints/last.pt")
    payload = torch.load(local, weights_only=True)
    assert {g["lr"] for g in payload["optimizer"]["state_dict"]["param_groups"]} == {0.0123}


def test_emergence_stopper_stops_and_says_when(tiny_overrides, store):
    out = pipeline.train(compose_cfg(tiny_overrides + [
        "trainer.epochs=6", "trainer.stop_epsilon=1e12", "trainer.stop_patience=2"]))
    run = next(iter(runs_by_name(store).values()))
    assert run.data.tags["stopped_early_at"] == "2"
    assert metric_steps(store, run, "train/loss") == [1, 2]
    assert run.info.status == "FINISHED" and out["test/acc"] > 0


def test_pretraining_is_shared_by_its_branches(tiny_overrides, store, count_epochs):
    pre = ["pretrain=mnist", "dataset@pretrain.dataset=digits", "pretrain.epochs=2",
           "pruning=magnitude", "pruning.epoch=0", "trainer.epochs=2"]
    pipeline.train(compose_cfg(tiny_overrides + pre + ["pruning.amount=0"]))
    pipeline.train(compose_cfg(tiny_overrides + pre + ["pruning.amount=0.5"]))
    assert len(count_epochs) == 2 + 2 + 2  # pretraining once, then 2 epochs per branch
    runs = runs_by_name(store)
    assert set(runs) == {"digits2to-digits-mlp-magnitude0-bs32-seed0",
                         "digits2to-digits-mlp-magnitude0.5-bs32-seed0"}
    for run in runs.values():
        assert metric_steps(store, run, "pretrain/train/loss") == [1, 2]
        assert metric_steps(store, run, "test/acc") == [0, 1, 2]
        assert metric_steps(store, run, "pretrain/emergence/E") == [1, 2]


def test_cnn_trains_with_emergence_init(tiny_overrides, store):
    out = pipeline.train(compose_cfg(tiny_overrides + [
        "model=cnn", "model.channels=[4,8]", "model.hidden=[16]", "init=emergence",
        "init.alpha=1.2", "pruning=magnitude", "pruning.epoch=1", "pruning.amount=0.5"]))
    run = next(iter(runs_by_name(store).values()))
    assert run.info.run_name == "digits-cnn-magnitude0.5-emergence1.2-bs32-seed0"
    assert {"emergence/active_frac/convs.0.1", "emergence/active_frac/convs.1.1",
            "emergence/active_frac/fcs.0.1"} <= set(out)
    assert out["pruning/sparsity"] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("batch_size", [4, 10, 64])  # a short last batch; one exact; one batch
def test_train_epoch_reports_the_mean_loss_and_accuracy_over_every_sample(batch_size):
    torch.manual_seed(0)
    x, y = torch.randn(10, 1, 2, 2), torch.randint(0, 3, (10,))
    model = MLP(in_shape=(1, 2, 2), num_classes=3, hidden=[5])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the network stays as it is
    loss, acc = train_mod.train_epoch(model, opt, x, y, batch_size, torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    assert acc == (logits.argmax(1) == y).sum().item() / 10


def test_a_validation_split_is_held_out_and_read_by_the_stoppers(tiny_overrides, store):
    from emergence_lab.config import validate
    from emergence_lab.data import load_dataset

    c = validate(compose_cfg(tiny_overrides + ["dataset.val_fraction=0.1"]))
    full = load_dataset(validate(compose_cfg(tiny_overrides)).dataset)
    split = load_dataset(c.dataset)
    n = full.x_train.shape[0]
    assert split.x_val.shape[0] == round(0.1 * n) and split.x_train.shape[0] == n - round(0.1 * n)
    assert split.digest != full.digest and torch.equal(split.x_test, full.x_test)
    again = load_dataset(c.dataset)  # seeded: the same share every time
    assert torch.equal(again.x_val, split.x_val)
    out = pipeline.train(compose_cfg(tiny_overrides + ["dataset.val_fraction=0.1"]))
    assert 0 <= out["val/acc"] <= 1 and "val/loss" in out
