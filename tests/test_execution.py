"""Compiled training (trainer.compile), channels-last memory and mixed precision: masks stay
applied, emergence is measured on the same weights as in eager mode, no recompilation per epoch,
and a compiled run resumes. Each compiles a small network for real (inductor, on the CPU)."""

import pytest
import torch
from torch import nn

from emergence_lab.config import validate
from emergence_lab.data import TensorData
from emergence_lab.models import build_model
from emergence_lab.models.cnn import CNNConfig
from emergence_lab.models.mlp import MLPConfig
from emergence_lab.prune.base import PruningConfig
from emergence_lab.prune.masks import apply_pruning, prunable_weights
from emergence_lab.run import loop, pipeline
from emergence_lab.run.execution import can_compile, eager, prepare, wants_compile
from emergence_lab.store import records
from tests.conftest import compose_cfg
from tests.test_resume import interrupt_at

pytestmark = pytest.mark.skipif(not can_compile(torch.device("cpu")),
                                reason="torch.compile needs a C++ compiler (g++) on the CPU")


def digits(n=512):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x[:n] / 16, dtype=torch.float32).view(-1, 1, 8, 8), torch.tensor(y[:n])


def pruned_mlp(seed=0):
    torch.manual_seed(seed)
    model = build_model(MLPConfig(hidden=[32, 16]), (1, 8, 8), 10)
    x, y = digits()
    apply_pruning(model, PruningConfig(name="magnitude", amount=0.5), 0.5, data=(x, y))
    return model, x, y


def train(model, ex, x, y, epochs):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(epochs):
        loop.train_epoch(model, opt, x, y, 64, torch.Generator().manual_seed(epoch), ex)
        loop.evaluate(model, x, y, 200, ex)


def test_masked_weights_stay_exactly_zero_and_no_epoch_recompiles():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    model, x, y = pruned_mlp()
    zeros = {k: w == 0 for k, w in prunable_weights(model).items()}
    ex = prepare(model, "true", "false", "fp32", torch.device("cpu"), steps=10**6)
    assert ex.compiled and ex.forward is not model
    train(model, ex, x, y, 1)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1  # it did compile
    train(model, ex, x, y, 3)
    assert counters["stats"]["unique_graphs"] == graphs  # the same graphs every epoch
    for k, w in prunable_weights(model).items():
        assert (w[zeros[k]] == 0).all(), f"{k}: masked weights moved under compile"
        assert (w[~zeros[k]] != 0).any()


def test_emergence_is_read_on_the_same_weights_as_in_eager_mode():
    model, x, y = pruned_mlp()
    twin = pruned_mlp()[0]
    ex = prepare(model, "true", "false", "fp32", torch.device("cpu"), steps=10**6)
    train(model, ex, x, y, 2)
    twin.load_state_dict(model.state_dict())
    cfg = validate(compose_cfg(["dataset=digits", "model.hidden=[32,16]"]))
    data = TensorData(x, y, x, y, 10, "d")
    compiled = loop.measure(model, data, x[:200], cfg, ex)
    plain = loop.measure(twin, data, x[:200], cfg, eager(twin))
    assert compiled["emergence/E"] == plain["emergence/E"]
    assert compiled["test/acc"] == pytest.approx(plain["test/acc"], abs=2 / len(y))


def test_channels_last_and_bf16_train_a_conv_net():
    torch.manual_seed(0)
    model = build_model(CNNConfig(channels=[4, 8], hidden=[16]), (1, 8, 8), 10)
    ex = prepare(model, "false", "auto", "bf16", torch.device("cpu"), steps=10)
    assert ex.channels_last and ex.dtype == torch.bfloat16 and not ex.compiled
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = digits()
    before = loop.evaluate(model, x, y, 200)[0]
    train(model, ex, x, y, 3)
    assert loop.evaluate(model, x, y, 200)[0] < before  # it learns
    with pytest.raises(ValueError, match="trainer.precision=fp16 needs a CUDA device"):
        prepare(model, "false", "false", "fp16", torch.device("cpu"), steps=10)


def test_auto_compiles_conv_nets_that_train_long_enough():
    cnn = build_model(CNNConfig(channels=[4], hidden=[8]), (1, 8, 8), 10)
    mlp = build_model(MLPConfig(hidden=[8]), (1, 8, 8), 10)
    cpu = torch.device("cpu")
    assert wants_compile("auto", cnn, cpu, 10**5) and not wants_compile("auto", cnn, cpu, 100)
    assert not wants_compile("auto", mlp, cpu, 10**5)
    assert wants_compile("true", mlp, cpu, 1) and not wants_compile("false", cnn, cpu, 10**5)


def test_a_compiled_run_resumes_and_ends_as_a_compiled_run_through(tiny_overrides, store, tmp_path,
                                                                      monkeypatch):
    overrides = tiny_overrides + ["trainer.compile=true", "pruning=magnitude", "pruning.epoch=1",
                                  "pruning.amount=0.5", "trainer.epochs=4"]
    interrupt_at(monkeypatch, 3)  # epochs 1-2 done, interrupted in epoch 3
    with pytest.raises(KeyboardInterrupt):
        pipeline.train(compose_cfg(overrides))
    monkeypatch.undo()
    resumed = pipeline.train(compose_cfg(overrides))
    (run,) = records.experiment_runs(store, "emergence")
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "1"
    steps = [s for s, _ in records.metric_history(store, run.info.run_id, "train/loss")]
    assert steps == [1, 2, 3, 4]
    assert resumed["pruning/sparsity"] == pytest.approx(0.5, abs=1e-3)
    through = pipeline.train(compose_cfg(overrides + [f"tracking.uri=sqlite:///{tmp_path / 'o.db'}"]))
    assert resumed["emergence/E"] == through["emergence/E"]
    assert resumed["test/acc"] == pytest.approx(through["test/acc"], abs=0.01)
