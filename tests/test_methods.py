"""The pruning methods end to end on digits: each YAML runs, and the lottery-ticket resets put
the survivors where they belong."""

import pytest
import torch

from emergence_lab.prune.masks import current_masks
from emergence_lab.run import pipeline, preflight, stages
from emergence_lab.run.config import validate
from emergence_lab.store import connection, records
from tests.conftest import compose_cfg

SHORT = {  # each method's schedule squeezed into 3 epochs
    "snip": [], "grasp": [], "synflow": ["pruning.iterations=10"],
    "gradual": ["pruning.epoch=1", "pruning.steps=2"],
    "lottery": ["pruning.epoch=1", "pruning.steps=2", "pruning.interval=1", "pruning.rewind_epoch=0"],
    "lottery_reinit": ["pruning.epoch=1", "pruning.steps=2", "pruning.interval=1"],
    "lottery_random": ["pruning.epoch=1", "pruning.steps=2", "pruning.interval=1",
                       "pruning.rewind_epoch=1"],
}


def test_every_method_runs_to_its_sparsity_and_logs_every_epoch(tiny_overrides, store):
    for method, extra in SHORT.items():
        out = pipeline.train(compose_cfg(tiny_overrides + [f"pruning={method}",
                                                         "pruning.amount=0.6", *extra]))
        assert out["pruning/sparsity"] == pytest.approx(0.6, abs=0.01), method
    client = connection.get_client(store)
    runs = client.search_runs([client.get_experiment_by_name("emergence").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * len(SHORT)
    names = {r.info.run_name for r in runs}
    assert {f"digits-mlp-{p}-bs32-seed0" for p in (
        "snip0.6", "magnitude0.6x2-cubic", "magnitude0.6x2-rewind0", "magnitude0.6x2-reinit",
        "ticket_shuffle0.6x2-rewind1")} <= names
    for r in runs:
        steps = [s for s, _ in records.metric_history(store, r.info.run_id, "emergence/E")]
        assert steps == [0, 1, 2, 3], r.info.run_name


@pytest.fixture
def after_first_reset(monkeypatch):
    """The network's weights and masks right after the first pruning step's reset."""
    seen = []
    real = stages._reset

    def spy(s, logger):
        real(s, logger)
        if not seen:
            seen.append(({k: v.clone() for k, v in s.model.state_dict().items()},
                         current_masks(s.model)))

    monkeypatch.setattr(stages, "_reset", spy)
    return seen


def _initial(overrides, seed_offset=0):
    c = validate(compose_cfg(overrides))
    net = preflight.build_network(c, (1, 8, 8), 10, seed=c.trainer.seed + seed_offset)
    return net.state_dict()


@pytest.mark.parametrize("method, offset", [("lottery", 0), ("lottery_reinit", 7919)])
def test_survivors_restart_from_the_rewind_state_or_a_fresh_init(
        tiny_overrides, method, offset, after_first_reset):
    overrides = tiny_overrides + [f"pruning={method}", "pruning.amount=0.5", *SHORT[method]]
    pipeline.train(compose_cfg(overrides))
    state, masks = after_first_reset[0]
    start = _initial(overrides, offset)  # rewind_epoch 0: the run's own initial weights
    for key, mask in masks.items():
        assert torch.equal(state[key], start[key] * mask), key
        assert 0 < mask.mean() < 1
    other = _initial(overrides, 7919 - offset)
    assert not torch.equal(state["head.weight"], other["head.weight"] * masks["head.weight"])
