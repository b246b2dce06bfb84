"""The pruning methods end to end on digits: each YAML runs, and the lottery-ticket resets put
the survivors where they belong."""

import pytest
import torch

from emergence_lab.config import validate
from emergence_lab.prune.base import STRATEGIES
from emergence_lab.prune.masks import current_masks
from emergence_lab.run import pipeline, preflight, stages
from emergence_lab.store import connection
from tests.conftest import ROOT, compose_cfg

METHODS = sorted(p.stem for p in (ROOT / "conf" / "pruning").glob("*.yaml"))  # every YAML


def squeezed(tiny: list[str], method: str) -> list[str]:
    """The method's YAML with its schedule squeezed into 3 epochs (from its own settings)."""
    p = compose_cfg(tiny + [f"pruning={method}"]).pruning
    out = [f"pruning={method}", f"pruning.epoch={min(p.epoch, 1)}", f"pruning.steps={min(p.steps, 2)}",
           "pruning.interval=1", f"pruning.rewind_epoch={min(p.rewind_epoch, 1)}"]
    out += ["pruning.iterations=10"] if "iterations" in p else []
    return out + (["pruning.amount=0.6"] if p.amount > 0 else [])


def test_every_method_runs_to_its_sparsity_and_logs_every_epoch(tiny_overrides, store):
    expected = {}
    for method in METHODS:
        cfg = compose_cfg(tiny_overrides + squeezed(tiny_overrides, method))
        c = validate(cfg)
        out = pipeline.train(cfg)
        expected[method] = 0.6 if c.pruning.amount > 0 and STRATEGIES[c.pruning.name].prunes else 0
        if c.pruning.name == "structured":  # whole units: the weights' share is not the amount
            assert 0.3 < out["pruning/sparsity"] < 0.9, method
        else:
            assert out["pruning/sparsity"] == pytest.approx(expected[method], abs=0.01), method
    client = connection.get_client(store)
    runs = client.search_runs([client.get_experiment_by_name("emergence").experiment_id])
    # methods that are one cell (control and none: the unpruned network) share a run
    assert all(r.info.status == "FINISHED" for r in runs) and len(runs) >= len(METHODS) - 1


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
    overrides = tiny_overrides + [f"pruning={method}", "pruning.amount=0.5", "pruning.epoch=1",
                                  "pruning.steps=2", "pruning.interval=1", "pruning.rewind_epoch=0"]
    pipeline.train(compose_cfg(overrides))
    state, masks = after_first_reset[0]
    start = _initial(overrides, offset)  # rewind_epoch 0: the run's own initial weights
    for key, mask in masks.items():
        assert torch.equal(state[key], start[key] * mask), key
        assert 0 < mask.mean() < 1
    other = _initial(overrides, 7919 - offset)
    assert not torch.equal(state["head.weight"], other["head.weight"] * masks["head.weight"])
