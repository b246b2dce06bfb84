"""One run end to end: own the cell, build the network, train it with pruning steps on the
configured schedule, measure emergence every epoch and log to MLflow.

Runs that share their training before the first pruning step share it through
`checkpoint.shared_prefix` (computed once, cached, its threads lent by waiting siblings); every
branch still logs its whole curve from step 0. Which process trains a cell is `store/cells.py`'s;
the loop itself is `train.py`'s.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm

from emergence_lab import procs
from emergence_lab.data import TensorData, load_dataset, shape_of
from emergence_lab.measure import keys, record
from emergence_lab.measure.counting import COUNTINGS
from emergence_lab.measure.formula import stop_epoch
from emergence_lab.measure.graph import unit_graph
from emergence_lab.models import INITS, build_model
from emergence_lab.prune.base import RESETS, check_ignore
from emergence_lab.prune.masks import apply_masks, apply_pruning, current_masks
from emergence_lab.prune.schedules import schedule
from emergence_lab.run import remeasure
from emergence_lab.run.checkpoint import (
    load_optimizer_state,
    optimizer_state,
    restore_state,
    save_checkpoint,
    shared_prefix,
)
from emergence_lab.run.config import Config, validate
from emergence_lab.run.identity import (
    config_hash,
    flatten,
    git_commit,
    legacy_hash,
    prefix_key,
    run_name,
)
from emergence_lab.run.loop import Row, fit, measure
from emergence_lab.store import cells as ownership
from emergence_lab.store import connection, records

log = logging.getLogger(__name__)


# Device names that stand for another: auto is cuda when there is one, else the cpu.
DEVICE_ALIASES: dict[str, Callable[[], str]] = {
    "auto": lambda: "cuda" if torch.cuda.is_available() else "cpu"}


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when available, else cpu; a device this machine lacks is a ValueError."""
    device = torch.device(DEVICE_ALIASES.get(name, lambda: name)())
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available,
                 "cpu": lambda: True}[device.type]()
    if device.type == "cuda" and available and (device.index or 0) >= torch.cuda.device_count():
        available = False
    if not available:
        raise ValueError(f"trainer.device={name}: this machine ({socket.gethostname()}) has no "
                         f"such device; use trainer.device=auto (cuda when there is one) or cpu")
    return device


def build_network(c: Config, in_shape: tuple[int, ...], num_classes: int,
                  seed: int | None = None) -> nn.Module:
    """The seeded (trainer.seed unless `seed`), initialized network of a run; non-finite initial
    weights are a config error (the init's settings), found before training rather than blamed
    on the learning rate."""
    torch.manual_seed(c.trainer.seed if seed is None else seed)
    model = build_model(c.model, in_shape, num_classes)
    INITS[c.init.name].apply(model, c.init)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        settings = ", ".join(f"init.{k}={v}" for k, v in vars(c.init).items() if k != "name")
        raise ValueError(f"{settings} (init={c.init.name}) makes the initial weights non-finite "
                         f"({bad[0]}); use a smaller value")
    return model


def preflight(c: Config, device: bool = True) -> None:
    """What a run would find out only after it started, checked before any run exists: the
    device (where jobs run on this machine), pretraining shapes, finite initial weights."""
    if device:
        resolve_device(c.trainer.device)
    shape, classes = shape_of(c.dataset)
    if c.pretrain.epochs:
        pre_shape, pre_classes = shape_of(c.pretrain.dataset)
        if (pre_shape, pre_classes) != (shape, classes):
            raise ValueError(
                f"pretrain.dataset={c.pretrain.dataset.name} has inputs {pre_shape} and "
                f"{pre_classes} classes, dataset={c.dataset.name} has {shape} and {classes}: "
                f"the network cannot move from one to the other; pick a data set of the same "
                f"shape, or pretrain=none")
    model = build_network(c, shape, classes)
    check_ignore(model, c.pruning)
    layers = c.threshold.layers
    # Traced here, so a model emergence cannot read fails before any run starts.
    counted = len(unit_graph(model, torch.zeros((1, *shape)), layers).layers)
    if counted < 2:
        raise ValueError(f"emergence needs at least 2 counted layers: threshold.layers="
                         f"{list(layers)} counts {counted} of this model; add hidden layers or "
                         f"'output' to threshold.layers")


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics alone (an epoch's measurement rides with them under keys.MEASUREMENT)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}


class EpochLogger:
    """The per-epoch callback: log metrics, advance the progress bar, write checkpoints and,
    when armed, stop once emergence has stayed at or below trainer.stop_epsilon."""

    def __init__(self, run: records.Run, c: Config, model: nn.Module,
                 opt: torch.optim.Optimizer, workdir: Path):
        self.run, self.c, self.model, self.opt, self.workdir = run, c, model, opt, workdir
        self.bar = tqdm(total=c.trainer.epochs, desc=run_name(c), unit="epoch",
                        disable=None if c.tracking.progress else True, leave=False)
        self.best_acc = -1.0
        self.last: dict[str, float] = {}
        self.emergence: list[tuple[int, float]] = []  # (epoch, E) since the stopper was armed
        self.stopper_armed = False
        self.pruning_steps = 0  # pruning steps applied to the network, saved with checkpoints
        self.rewind: dict[str, Any] | None = None  # the state a reset rewinds to, saved with them

    def __call__(self, epoch: int, metrics: dict[str, Any], checkpoint: str = "all") -> bool:
        """Log one epoch and store its measurement; checkpoint "all" (last.pt, best.pt when
        best), "last" or "none"."""
        self.run.check_owner()  # never log into a run another process has taken over
        if keys.MEASUREMENT in metrics:
            self.store_measurement(metrics[keys.MEASUREMENT], epoch)
        metrics = numbers(metrics)
        self.run.log_metrics(metrics, step=epoch)
        if keys.TRAIN_LOSS in metrics:  # a training epoch of the run's own data set
            self.last = metrics
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{metrics['train/loss']:.3f}",
                                 acc=f"{metrics['test/acc']:.3f}")
            log.info("%s epoch %d: train/loss %.4f test/acc %.4f E %.4g", run_name(self.c),
                     epoch, metrics[keys.TRAIN_LOSS], metrics[keys.TEST_ACC], metrics[keys.E])
        elif epoch == 0:
            self.last = metrics
        if checkpoint != "none" and self.c.trainer.checkpoints:
            self.checkpoint(epoch, metrics[keys.TEST_ACC], best=checkpoint == "all")
        return self._should_stop(epoch, metrics)

    def _should_stop(self, epoch: int, metrics: dict[str, float]) -> bool:
        eps = self.c.trainer.stop_epsilon
        if not self.stopper_armed or eps is None:
            return False
        self.emergence.append((epoch, metrics[keys.E]))
        fired = stop_epoch(self.emergence, eps, self.c.trainer.stop_patience)
        if fired is not None:
            self.run.set_tags({"stopped_early_at": fired})
            log.info("%s: E <= %g for %d epochs, stopping at epoch %d", run_name(self.c), eps,
                     self.c.trainer.stop_patience, fired)
        return fired is not None

    def store_measurement(self, state: dict[str, Any], epoch: int, phase: str = "epoch") -> None:
        """The measurement E is recomputed from under any setting (measure.record)."""
        path = self.workdir / record.file_name(epoch, phase)
        torch.save(state, path)
        self.run.log_artifact(path, record.FOLDER)
        path.unlink()

    def checkpoint(self, epoch: int, acc: float, best: bool = True) -> None:
        """Log last.pt (what a resumed run starts from), and best.pt when acc is the best so far
        of the network as it ends up (epochs before its last pruning step never count)."""
        last = self.workdir / "last.pt"
        extra = {"rewind": self.rewind} if self.rewind is not None else {}
        save_checkpoint(last, self.model, self.opt, epoch=epoch, test_acc=acc,
                        pruning_steps=self.pruning_steps, **extra)
        self.run.log_artifact(last, "checkpoints")
        if best and acc > self.best_acc:
            self.best_acc = acc
            shutil.copyfile(last, self.workdir / "best.pt")  # the same bytes: not serialized twice
            self.run.log_artifact(self.workdir / "best.pt", "checkpoints")

    def close(self) -> None:
        self.bar.close()


@dataclasses.dataclass
class Setup:
    """What one run trains with."""

    c: Config
    model: nn.Module
    opt: torch.optim.Optimizer
    data: TensorData
    probe: torch.Tensor
    pretrain: tuple[TensorData, torch.Tensor] | None  # pretraining data and its probe set


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
                lambda e, m: keep(e, {f"{keys.PRETRAIN}{k}": v for k, v in numbers(m).items()}, "none"))
        keep_own(0, measure(s.model, s.data, s.probe, s.c))
        fit(s.model, s.opt, s.data, s.probe, s.c, 1, upto, keep_own)
        return {**_state(s), "history": history, **saved}

    return compute


def _start_fresh(s: Setup, events: list[tuple[int, float]], device: torch.device,
                 run: records.Run, logger: EpochLogger) -> int:
    """Epoch 0, or the shared prefix (cached) up to the first pruning step; returns its epoch."""
    c = s.c
    upto = events[0][0] if events else 0
    if not events and not s.pretrain:
        logger(0, measure(s.model, s.data, s.probe, c), checkpoint="none")
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
            logger(epoch, metrics, checkpoint="none")
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


def _train_branch(s: Setup, device: torch.device, run: records.Run, logger: EpochLogger,
                  resume: dict[str, Any] | None) -> None:
    """From epoch 0 (or a resumed checkpoint), prune-and-train segments to the last epoch."""
    c, p = s.c, s.c.pruning
    events = schedule(p)
    if resume is None:
        epoch, done = _start_fresh(s, events, device, run, logger), 0
    else:
        epoch, done = resume["epoch"], resume.get("pruning_steps", 0)
        restore_state(resume, s.model, s.opt)
        logger.rewind = resume.get("rewind")
        logger.pruning_steps = done
        if done:
            _after_prune_lr(s.opt, c)
    before_final = lambda e, m: logger(e, m, checkpoint="last")  # noqa: E731 - not best.pt yet
    for i in range(done, len(events)):
        at, rate = events[i]
        if at > epoch and fit(s.model, s.opt, s.data, s.probe, c, epoch + 1, at, before_final):
            return
        epoch = at
        apply_pruning(s.model, p, rate, seed=c.trainer.seed + at,
                      data=(s.data.x_train, s.data.y_train))
        if rate > 0:  # an unpruned control is never reset
            _reset(s, logger)
        after = measure(s.model, s.data, s.probe, c)
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
    fit(s.model, s.opt, s.data, s.probe, c, epoch + 1, c.trainer.epochs, logger)


def _remeasure(c: Config, run: Any, name: str) -> None:
    """A finished cell: add the configured analysis setting's series from its stored
    measurements (no training)."""
    t = c.threshold.setting()
    wanted = [t.with_counting(k) for k in COUNTINGS.names()]
    lacking = [s.describe() for s in wanted if keys.setting_keys(s)[0] not in run.data.metrics]
    done = remeasure.add_settings(c.tracking.uri, run, wanted)
    if done == "unmeasured":
        log.warning("%s: run %s was logged before runs stored their measurements: E under %s "
                    "needs retraining (force=true); its stored series are unchanged", name,
                    run.info.run_id, " and ".join(lacking))
    elif done == "added":
        log.info("%s: FINISHED as run %s; added E under %s from its stored measurements (no "
                 "training)", name, run.info.run_id, " and ".join(lacking))
    else:
        log.info("%s: skipped, FINISHED as run %s (force=true reruns it)", name, run.info.run_id)


def _load(cfg, device: torch.device) -> tuple[TensorData, torch.Tensor]:
    data = load_dataset(cfg).to(device)
    return data, data.probe(cfg.probe_size, cfg.probe_seed)


def _interrupt(signum: int, frame: Any) -> None:
    procs.stop_requested.set()
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def train(cfg: DictConfig, parent_run_id: str | None = None,
          overrides: list[str] | None = None) -> dict[str, float]:
    """Run one configuration end to end; returns the last epoch's metrics ({} when another
    process trains the cell and tracking.on_taken=skip).

    A configuration that already has a FINISHED run in the experiment is skipped; an
    interrupted one continues in its own run from its last checkpoint (force=true: a new run);
    one that another live process trains is waited for (see runner.acquire).
    """
    c = validate(cfg)
    procs.stop_requested.clear()  # a pool worker's previous job may have been stopped
    procs.stopped_run_closed.clear()
    if c.trainer.num_threads:
        torch.set_num_threads(c.trainer.num_threads)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # marks the run KILLED, like Ctrl-C
    device = resolve_device(c.trainer.device)
    # Missing or corrupt data, and configs that cannot train, fail here, before a run exists.
    preflight(c, device=False)
    data, probe = _load(c.dataset, device)
    pretrain = _load(c.pretrain.dataset, device) if c.pretrain.epochs else None
    identity, name, commit = config_hash(c), run_name(c), git_commit()
    tags = {"config_hash": identity, "git_commit": commit, "mlflow.source.git.commit": commit,
            "data_digest": data.digest, "dataset_label": data.label,
            "dataset": c.dataset.name, "model": c.model.name, "pruning": c.pruning.name,
            "device": str(device), "torch_threads": torch.get_num_threads(),
            "overrides": " ".join(overrides or [])[:5000]}
    got = ownership.acquire(c, identity, name, tags, parent_run_id, legacy_hash(c))
    if got.state == "skip":
        _remeasure(c, got.run, name)
        return dict(got.run.data.metrics)
    if got.state == "taken":
        log.warning("%s: skipped, run %s is being trained by %s", name, got.run_id, got.owner)
        return {}
    resumed = got.state == "resume"
    with tempfile.TemporaryDirectory() as workdir, records.Run(
            c.tracking.uri, c.tracking.experiment, name, tags, parent_run_id, run_id=got.run_id,
            owner=got.owner, resumed=resumed, heartbeat_s=c.tracking.heartbeat_s) as run:
        checkpoint = ownership.resume_checkpoint(c.tracking.uri, run.run_id, Path(workdir)) \
            if resumed else None
        if not resumed:
            resolved = OmegaConf.to_container(cfg, resolve=True)
            resolved.pop("hydra", None)
            run.log_params(flatten(resolved))
            run.log_text(OmegaConf.to_yaml(resolved), "config.yaml")
            run.log_text("\n".join(overrides or []) + "\n", "overrides.txt")
        model = build_network(c, tuple(data.x_train.shape[1:]), data.num_classes).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=c.trainer.lr,
                              momentum=c.trainer.momentum, weight_decay=c.trainer.weight_decay)
        logger = EpochLogger(run, c, model, opt, Path(workdir))
        try:
            _train_branch(Setup(c, model, opt, data, probe, pretrain), device, run, logger,
                          checkpoint)
        finally:
            logger.close()
        return numbers(logger.last)
