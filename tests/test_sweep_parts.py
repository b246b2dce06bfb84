"""The pieces issue 35 split out, each on its own: the epoch loop and its callbacks, the plan a
sweep hands its jobs, the one owner of the launching process's signals, and the one place that
ends a sweep's parent run."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from emergence_lab.config import validate
from emergence_lab.data import TensorData
from emergence_lab.models import build_model
from emergence_lab.run import plan as plan_mod
from emergence_lab.run.loop import Branch, Epoch, fit
from emergence_lab.store import sweeps
from emergence_lab.store.connection import get_client
from emergence_lab.sweep import parent, stop
from tests.conftest import compose_cfg


def _digits_setup(epochs: int = 3):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y)
    data = TensorData(x[:1200], y[:1200], x[1200:], y[1200:], num_classes=10, digest="digits")
    c = validate(compose_cfg(["dataset=digits", "model.hidden=[16,8]", f"trainer.epochs={epochs}",
                              "trainer.lr=0.05"]))
    torch.manual_seed(0)
    model = build_model(c.model, (1, 8, 8), 10)
    opt = torch.optim.SGD(model.parameters(), lr=c.trainer.lr)
    return c, model, opt, data, x[:256]


def test_the_loop_hands_every_epoch_to_every_callback_and_stops_when_one_asks():
    """The loop knows no callback by name: any callables with the one signature, in order; a
    True from one stops training after that epoch, and every callback still saw it."""
    c, model, opt, data, probe = _digits_setup()
    seen: list[tuple[str, int, str, str]] = []

    def first(e: Epoch) -> None:
        seen.append(("first", e.epoch, e.phase, e.checkpoint))

    def stopper(e: Epoch) -> bool:
        seen.append(("stopper", e.epoch, e.phase, e.checkpoint))
        assert e.model is model and e.opt is opt and "train/loss" in e.metrics
        return e.epoch == 2

    branch = Branch(pruning_steps=1)
    stopped = fit(model, opt, data, probe, c, 1, 3, [first, stopper], branch=branch,
                  checkpoint="last")
    assert stopped
    assert seen == [("first", 1, "epoch", "last"), ("stopper", 1, "epoch", "last"),
                    ("first", 2, "epoch", "last"), ("stopper", 2, "epoch", "last")]


def test_a_prefix_names_pretraining_metrics_and_drops_the_measurement():
    c, model, opt, data, probe = _digits_setup()
    got: list[Epoch] = []
    fit(model, opt, data, probe, c, 1, 1, [got.append], branch=Branch(), phase="pretrain",
        prefix="pretrain/")
    (e,) = got
    assert e.phase == "pretrain" and "pretrain/train/loss" in e.metrics
    assert not any(isinstance(v, dict) for v in e.metrics.values())  # no measurement to store


def test_a_job_takes_the_plan_it_was_handed_only_when_its_config_resolves_to_it(monkeypatch):
    cfg = compose_cfg(["dataset=digits", "model.hidden=[16,8]", "trainer.epochs=2"])
    handed = plan_mod.plan_of(cfg, validate(cfg), ["trainer.epochs=2"], parent_run_id="p1",
                              preflighted=True)
    calls = []
    monkeypatch.setattr(plan_mod, "validate", lambda c: calls.append(c) or validate(c))
    plan_mod.hand(handed)
    try:
        got = plan_mod.make_plan(cfg, None, ["trainer.epochs=2"])
        assert not calls and got.identity == handed.identity and got.preflighted
        assert got.parent_run_id == "p1"
        other = compose_cfg(["dataset=digits", "model.hidden=[16,8]", "trainer.epochs=3"])
        mine = plan_mod.make_plan(other, None, ["trainer.epochs=3"])
        assert len(calls) == 1 and mine.identity != handed.identity and not mine.preflighted
    finally:
        plan_mod.hand(None)
    plan_mod.make_plan(cfg)
    assert len(calls) == 2  # nothing handed: validated


def test_the_first_signal_is_the_sweeps_and_later_ones_are_ignored():
    hits: list[int] = []
    before = signal.getsignal(signal.SIGINT)  # pytest-xdist's workers ignore SIGINT
    stop.install(hits.append)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # the sweep is stopping already: ignored
        assert hits == [signal.SIGTERM] and stop.first() == signal.SIGTERM
        stop.install(hits.append)  # a new sweep
        with stop.held():  # the pool runs: the signal is only noted, the pool reads it
            os.kill(os.getpid(), signal.SIGINT)
        assert hits == [signal.SIGTERM] and stop.first() == signal.SIGINT
    finally:
        stop.uninstall()
        from emergence_lab import procs

        procs.stop_requested.clear()
    assert signal.getsignal(signal.SIGINT) is before  # given back as it was


def test_the_pool_owns_the_signals_while_it_runs_when_no_sweep_callback_did():
    before = signal.getsignal(signal.SIGTERM)
    with stop.held():
        assert signal.getsignal(signal.SIGTERM) is not before
        assert stop.first() is None
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("how, status", [("end", "FINISHED"), ("exit", "FAILED"),
                                         ("left", "RUNNING")])
def test_the_parent_run_ends_in_one_place_and_never_stays_running_by_accident(store, how,
                                                                              status):
    run_id = parent.open_parent(store, "exp", "exp-sweep", f"hash-{how}", {"jobs": "1"})
    try:
        if how == "end":
            parent.end("FINISHED")
            parent.end("FAILED")  # later calls change nothing
        elif how == "left":
            parent.leave_open()
        parent._at_exit()  # what the process's exit does
        assert get_client(store).get_run(run_id).info.status == status
        assert (parent.current() is None) == (how != "left")
    finally:
        if how == "left":
            sweeps.end_sweep(store, run_id, "FAILED")
        parent._current = None
