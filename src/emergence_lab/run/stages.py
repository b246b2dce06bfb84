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
    load_optimizer_state,
    optimizer_state,
    restore_state,
    shared_prefix,
)
from emergence_lab.run.execution import Execution
from emergence_lab.run.landscape import LandscapeHook
from emergence_lab.run.logger import EpochLogger, numbers
from emergence_lab.run.loop import Row, fit, measure
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


def _state(s: Setup) -> dict[str, Any]:
    """A copy of the model's and the optimizer's state (training goes on in place)."""
    return copy.deepcopy({"model": s.model.state_dict(),
                          "optimizer": optimizer_state(s.model, s.opt)})


def _prefix(s: Setup, upto: int, logger: EpochLogger
            ) -> Callable[[Callable[[], None]], dict[str, Any]]:
    """The training every sibling shares: pretraining, then epochs 1..upto of the run's data,
    with the state at pruning.rewind_epoch when the reset rewinds to it. `borrow()`, called
    before each epoch, takes up the threads of siblings waiting for it."""
    rewinds = bool(RESETS[s.c.pruning.reset].prefix_fields)

    def compute(borrow: Callable[[], None]) -> dict[str, Any]:
        history: list[Row] = []
        saved: dict[str, Any] = {}
        borrow()

        def keep(epoch: int, metrics: dict[str, float], checkpoint: str = "last") -> bool:
            history.append((epoch, metrics))
            borrow()
            return logger(epoch, metrics, checkpoint)

        def keep_own(epoch: int, metrics: dict[str, float]) -> bool:
            if rewinds and epoch == s.c.pruning.rewind_epoch:
                saved["rewind"] = _state(s)
            return keep(epoch, metrics, "none" if epoch == 0 else "last")

        if s.pretrain:
            pre_data, pre_probe = s.pretrain
            fit(s.model, s.opt, pre_data, pre_probe, s.c, 1, s.c.pretrain.epochs,
                lambda e, m: keep(e, {f"{keys.PRETRAIN}{k}": v for k, v in numbers(m).items()}, "none"),
                s.ex)
        keep_own(0, measure(s.model, s.data, s.probe, s.c, s.ex))
        fit(s.model, s.opt, s.data, s.probe, s.c, 1, upto, keep_own, s.ex)
        return {**_state(s), "history": history, **saved}

    return compute


def _start_fresh(s: Setup, events: list[tuple[int, float]], device: torch.device,
                 run: records.Run, logger: EpochLogger) -> int:
    """Epoch 0, or the shared prefix (cached) up to the first pruning step; returns its epoch."""
    c = s.c
    upto = events[0][0] if events else 0
    if not events and not s.pretrain:
        logger(0, measure(s.model, s.data, s.probe, c, s.ex), checkpoint="none")
        return 0
    key = prefix_key(c, [s.data.digest, s.pretrain[0].digest if s.pretrain else None], device)
    cache_dir = c.tracking.cache_dir or connection.default_cache_dir(c.tracking.uri)
    # Threads left to torch (num_threads 0) may be lent by waiting siblings; a pinned count stays.
    payload, cached = shared_prefix(cache_dir, key, _prefix(s, upto, logger),
                                    lend=not c.trainer.num_threads)
    run.set_tags({"prefix_cache": "hit" if cached else "miss", "prefix_key": key})
    if cached:
        restore_state(payload, s.model, s.opt)
        for epoch, metrics in payload["history"]:
            logger(epoch, metrics, checkpoint="none", loaded=True)
    logger.rewind = payload.get("rewind")
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


def _reset(s: Setup, logger: EpochLogger) -> None:
    """After a pruning step, restart the surviving weights where pruning.reset says; the masks
    stay, and the optimizer's state goes with the weights (cleared for a fresh init)."""
    c = s.c

    def fresh() -> dict[str, Any]:
        net = build_network(c, s.model.input_shape, s.data.num_classes, seed=c.trainer.seed + 7919)
        return {"model": net.state_dict(), "optimizer": None}

    state = RESETS[c.pruning.reset].state(Sources(logger.rewind, fresh))
    if state is None:
        return
    masks = current_masks(s.model)
    weights = {k: v for k, v in state["model"].items() if not k.endswith("_mask")}
    s.model.load_state_dict(weights, strict=False)
    apply_masks(s.model, masks)
    s.opt.state.clear()
    if state["optimizer"] is not None:
        load_optimizer_state(s.model, s.opt, state["optimizer"])


def _train_branch(s: Setup, events: Sequence[tuple[int, float]], device: torch.device,
                  run: records.Run, logger: EpochLogger, resume: dict[str, Any] | None) -> None:
    """From epoch 0 (or a resumed checkpoint), prune-and-train segments (the plan's pruning
    schedule, `events`) to the last epoch."""
    c, p = s.c, s.c.pruning
    hook = LandscapeHook(c, s.model, s.data, run, logger.workdir)
    if resume is None:
        epoch, done = _start_fresh(s, events, device, run, logger), 0
        hook(epoch)  # the pruning epoch's state (or the initialization's), before any pruning
    else:
        epoch, done = resume["epoch"], resume.get("pruning_steps", 0)
        restore_state(resume, s.model, s.opt)
        logger.rewind = resume.get("rewind")
        logger.pruning_steps = done
        if done:
            _after_prune_lr(s.opt, c)
    def before_final(e: int, m: dict[str, Any]) -> bool:
        stop = logger(e, m, checkpoint="last")  # not best.pt yet
        hook(e)
        return stop

    def final(e: int, m: dict[str, Any]) -> bool:
        stop = logger(e, m)
        hook(e)
        return stop

    for i in range(done, len(events)):
        at, rate = events[i]
        if at > epoch and fit(s.model, s.opt, s.data, s.probe, c, epoch + 1, at, before_final,
                              s.ex):
            return
        epoch = at
        apply_pruning(s.model, p, rate, seed=c.trainer.seed + at,
                      data=(s.data.x_train, s.data.y_train))
        if rate > 0:  # an unpruned control is never reset
            _reset(s, logger)
        after = measure(s.model, s.data, s.probe, c, s.ex)
        logger.store_measurement(after.pop(keys.MEASUREMENT), at, "pruned")
        run.log_metrics({keys.E_AFTER: after[keys.E],
                         keys.RELATIVE_AFTER: after[keys.RELATIVE],
                         keys.TEST_ACC_AFTER: after[keys.TEST_ACC],
                         keys.SPARSITY_AFTER: after[keys.SPARSITY]}, step=at)
        logger.pruning_steps = i + 1
        _after_prune_lr(s.opt, c)
        if c.trainer.checkpoints:
            logger.checkpoint(at, after[keys.TEST_ACC], best=i + 1 == len(events))
    logger.stopper_armed = True  # only once the network is final
    fit(s.model, s.opt, s.data, s.probe, c, epoch + 1, c.trainer.epochs, final, s.ex)
