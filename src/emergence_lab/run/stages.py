"""The stages of a run's training: the shared prefix (computed once per group of siblings,
cached), pruning steps on the plan's schedule with their resets, and the training after each."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from emergence_lab.config import Config
from emergence_lab.config.identity import (
    prefix_key,
)
from emergence_lab.data import TensorData
from emergence_lab.measure import keys
from emergence_lab.prune.base import RESETS
from emergence_lab.prune.masks import apply_masks, apply_pruning, current_masks
from emergence_lab.run.checkpoint import (
    CacheCheck,
    load_optimizer_state,
    optimizer_state,
    restore_state,
    shared_prefix,
)
from emergence_lab.run.execution import Execution
from emergence_lab.run.landscape import LandscapeHook
from emergence_lab.run.loop import Branch, Callback, Epoch, Row, fit, measure, notify
from emergence_lab.run.preflight import build_network
from emergence_lab.store import connection, records

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Setup:
    """What one run trains with."""

    c: Config
    model: nn.Module
    opt: torch.optim.Optimizer
    data: TensorData
    probe: torch.Tensor
    pretrain: tuple[TensorData, torch.Tensor] | None  # pretraining data and its probe set
    ex: Execution | None = None  # how the steps run (compiled, channels-last, precision)
    code: str = ""  # the code version training (commit, tree state): what cached files record


def _state(s: Setup) -> dict[str, Any]:
    """A copy of the model's and the optimizer's state (training goes on in place)."""
    return copy.deepcopy({"model": s.model.state_dict(),
                          "optimizer": optimizer_state(s.model, s.opt)})


def _prefix(s: Setup, upto: int, callbacks: Sequence[Callback], branch: Branch
            ) -> Callable[[Callable[[], None]], dict[str, Any]]:
    """The training every sibling shares: pretraining, then epochs 1..upto of the run's data,
    with the state at pruning.rewind_epoch when the reset rewinds to it. `borrow()`, called
    before each epoch, takes up the threads of siblings waiting for it."""
    rewinds = bool(RESETS[s.c.pruning.reset].prefix_fields)

    def compute(borrow: Callable[[], None]) -> dict[str, Any]:
        history: list[Row] = []
        saved: dict[str, Any] = {}
        borrow()

        def keep(e: Epoch) -> None:  # the history the siblings replay; then the next epoch's threads
            if e.phase == "epoch" and rewinds and e.epoch == s.c.pruning.rewind_epoch:
                saved["rewind"] = _state(s)
            history.append((e.epoch, e.metrics))
            borrow()

        these = [keep, *callbacks]
        if s.pretrain:
            pre_data, pre_probe = s.pretrain
            fit(s.model, s.opt, pre_data, pre_probe, s.c, 1, s.c.pretrain.epochs, these, s.ex,
                branch=branch, phase="pretrain", checkpoint=None, prefix=keys.PRETRAIN)
        notify(these, Epoch(0, measure(s.model, s.data, s.probe, s.c, s.ex), s.model, s.opt,
                            branch, checkpoint=None))
        fit(s.model, s.opt, s.data, s.probe, s.c, 1, upto, these, s.ex, branch=branch,
            checkpoint="last")
        return {**_state(s), "history": history, **saved}

    return compute


def _phase_of(metrics: dict[str, Any]) -> str:
    """A replayed epoch's phase: pretraining's metrics carry its prefix."""
    return "pretrain" if any(k.startswith(keys.PRETRAIN) for k in metrics) else "epoch"


def _start_fresh(s: Setup, events: Sequence[tuple[int, float]], device: torch.device,
                 run: records.Run, callbacks: Sequence[Callback], branch: Branch) -> int:
    """Epoch 0, or the shared prefix (cached) up to the first pruning step; returns its epoch."""
    c = s.c
    upto = events[0][0] if events else 0
    if not events and not s.pretrain:
        notify(callbacks, Epoch(0, measure(s.model, s.data, s.probe, c, s.ex), s.model, s.opt,
                                branch, checkpoint=None))
        return 0
    key = prefix_key(c, [s.data.digest, s.pretrain[0].digest if s.pretrain else None], device)
    cache_dir = c.tracking.cache_dir or connection.default_cache_dir(c.tracking.uri)
    # Threads left to torch (num_threads 0) may be lent by waiting siblings; a pinned count stays.
    check = CacheCheck(c.tracking.uri, c.tracking.experiment, s.code)
    payload, cached = shared_prefix(cache_dir, key, _prefix(s, upto, callbacks, branch),
                                    lend=not c.trainer.num_threads, check=check)
    run.set_tags({"prefix_cache": "hit" if cached else "miss", "prefix_key": key})
    if cached:
        restore_state(payload, s.model, s.opt)
        for epoch, metrics in payload["history"]:
            notify(callbacks, Epoch(epoch, metrics, s.model, s.opt, branch, _phase_of(metrics),
                                    loaded=True, checkpoint=None))
    branch.rewind = payload.get("rewind")
    return upto


def _after_prune_lr(opt: torch.optim.Optimizer, c: Config) -> None:
    """trainer.lr_after_prune, when set, from the first pruning step on (the re-tuned lr of a
    pruned branch; the shared training before it keeps trainer.lr)."""
    if c.trainer.lr_after_prune is not None:
        for group in opt.param_groups:
            group["lr"] = c.trainer.lr_after_prune


@dataclasses.dataclass
class Sources:
    """What a reset restarts the survivors from (see pruning.RESETS)."""

    rewind: dict[str, Any] | None  # the state at pruning.rewind_epoch
    fresh: Callable[[], dict[str, Any]]  # a new random initialization


def _reset(s: Setup, branch: Branch) -> None:
    """After a pruning step, restart the surviving weights where pruning.reset says; the masks
    stay, and the optimizer's state goes with the weights (cleared for a fresh init)."""
    c = s.c

    def fresh() -> dict[str, Any]:
        net = build_network(c, s.model.input_shape, s.data.num_classes, seed=c.trainer.seed + 7919)
        return {"model": net.state_dict(), "optimizer": None}

    state = RESETS[c.pruning.reset].state(Sources(branch.rewind, fresh))
    if state is None:
        return
    masks = current_masks(s.model)
    weights = {k: v for k, v in state["model"].items() if not k.endswith("_mask")}
    s.model.load_state_dict(weights, strict=False)
    apply_masks(s.model, masks)
    s.opt.state.clear()
    if state["optimizer"] is not None:
        load_optimizer_state(s.model, s.opt, state["optimizer"])


def _prune(s: Setup, i: int, events: Sequence[tuple[int, float]], callbacks: Sequence[Callback],
           branch: Branch) -> None:
    """Pruning step i of the schedule (at its epoch, to its rate), its reset, and the pruned
    network measured and handed to the callbacks (phase pruned; best.pt may follow the last)."""
    c, (at, rate) = s.c, events[i]
    apply_pruning(s.model, c.pruning, rate, seed=c.trainer.seed + at,
                  data=(s.data.x_train, s.data.y_train))
    if rate > 0:  # an unpruned control is never reset
        _reset(s, branch)
    after = measure(s.model, s.data, s.probe, c, s.ex)
    branch.pruning_steps = i + 1
    _after_prune_lr(s.opt, c)
    metrics = {keys.E_AFTER: after[keys.E], keys.RELATIVE_AFTER: after[keys.RELATIVE],
               keys.TEST_ACC_AFTER: after[keys.TEST_ACC],
               keys.SPARSITY_AFTER: after[keys.SPARSITY], keys.MEASUREMENT: after[keys.MEASUREMENT]}
    notify(callbacks, Epoch(at, metrics, s.model, s.opt, branch, "pruned",
                            checkpoint="all" if i + 1 == len(events) else "last"))


def _train_branch(s: Setup, events: Sequence[tuple[int, float]], device: torch.device,
                  run: records.Run, callbacks: Sequence[Callback], workdir: Any,
                  resume: dict[str, Any] | None) -> None:
    """From epoch 0 (or a resumed checkpoint), prune-and-train segments (the plan's pruning
    schedule, `events`) to the last epoch."""
    c = s.c
    hook = LandscapeHook(c, s.model, s.data, run, workdir, s.code)
    branch = Branch()
    if resume is None:
        epoch = _start_fresh(s, events, device, run, callbacks, branch)
        hook.at(epoch)  # the pruning epoch's state (or the initialization's), before any pruning
    else:
        epoch = resume["epoch"]
        branch.pruning_steps, branch.rewind = resume.get("pruning_steps", 0), resume.get("rewind")
        restore_state(resume, s.model, s.opt)
        if branch.pruning_steps:
            _after_prune_lr(s.opt, c)
    these = [*callbacks, hook]
    for i in range(branch.pruning_steps, len(events)):
        at = events[i][0]
        if at > epoch and fit(s.model, s.opt, s.data, s.probe, c, epoch + 1, at, these, s.ex,
                              branch=branch, checkpoint="last"):  # not best.pt yet
            return
        epoch = at
        _prune(s, i, events, callbacks, branch)
    branch.final = True  # early stopping reads only the final network
    fit(s.model, s.opt, s.data, s.probe, c, epoch + 1, c.trainer.epochs, these, s.ex,
        branch=branch)
