"""One run: train, measure emergence every epoch, prune on the configured schedule, log to MLflow.

The loop is plain: `fit` trains epochs and hands each epoch's numbers to one callback, which
measures, logs and checkpoints. Runs that share their training before the first pruning step
share it through `checkpoint.shared_prefix`; every branch still logs its whole curve from step 0.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from emergence_lab import procs, runner, tracking
from emergence_lab.checkpoint import optimizer_state, restore_state, save_checkpoint, shared_prefix
from emergence_lab.config import Config, validate
from emergence_lab.data import TensorData, load_dataset
from emergence_lab.emergence import (
    ACTIVITY_MODES,
    RELATIVE_THETA_KEYS,
    THETA_KEYS,
    active_counts,
    emergence_metrics,
    sparsity_baselines,
    stop_epoch,
)
from emergence_lab.identity import config_hash, flatten, git_commit, prefix_key, run_name
from emergence_lab.models import UnitModel, collect_activations
from emergence_lab.pruning import alive_units, apply_pruning, schedule, sparsity, surviving_parameters
from emergence_lab.runner import resolve_device

log = logging.getLogger(__name__)
Row = tuple[int, dict[str, float]]  # (epoch, metrics)
OnEpoch = Callable[[int, dict[str, float]], bool]  # returns True to stop training


def train_epoch(model: UnitModel, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator) -> tuple[float, float]:
    """One pass over shuffled index slices of in-memory tensors; (mean loss, accuracy)."""
    model.train()
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator).to(x.device)
    # Kept on the device and reduced once after the epoch: a .item() per batch would be a
    # CPU-GPU sync point, and every extra op per batch costs the CPU loop time.
    losses: list[torch.Tensor] = []
    predicted = torch.empty(n, dtype=y.dtype, device=x.device)
    for start in range(0, n, batch_size):
        idx = perm[start:start + batch_size]
        xb, yb = x[idx], y[idx]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        predicted[start:start + batch_size] = logits.argmax(1)
    sizes = torch.full((len(losses),), float(batch_size), device=x.device)
    sizes[-1] = n - batch_size * (len(losses) - 1)  # the last batch may be short
    mean_loss = (torch.stack(losses) * sizes).sum() / n
    return mean_loss.item(), (predicted == y[perm]).sum().item() / n


@torch.no_grad()
def evaluate(model: UnitModel, x: torch.Tensor, y: torch.Tensor, batch_size: int
             ) -> tuple[float, float]:
    """(mean loss, accuracy) over a data split, in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start:start + batch_size])
        yb = y[start:start + batch_size]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    return loss_sum.item() / x.shape[0], correct.item() / x.shape[0]


def measure(model: UnitModel, data: TensorData, probe: torch.Tensor, c: Config) -> dict[str, float]:
    """Test metrics, emergence on the probe set, sparsity and surviving parameters."""
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test, c.trainer.eval_batch_size)
    t0 = time.perf_counter()
    acts = collect_activations(model, probe, c.threshold.layers, c.trainer.eval_batch_size)
    # Units removed by structured pruning leave n_i: drop their columns before counting.
    alive = alive_units(model.unit_producers())
    acts = {k: v[:, alive[k]] if k in alive else v for k, v in acts.items()}
    t = c.threshold
    n_params = surviving_parameters(model)
    metrics = emergence_metrics(active_counts(acts, t.theta, t.mode, t.min_fraction), n_params)
    # The same activations at the other thresholds and in both activity modes (mean over the
    # probe set, share of probe samples): the report's sensitivity tables need no retraining.
    for mode in ACTIVITY_MODES:
        for theta in t.grid:
            grid = emergence_metrics(active_counts(acts, theta, mode, t.min_fraction), n_params)
            metrics[f"{THETA_KEYS[mode]}{theta:g}"] = grid["emergence/E"]
            metrics[f"{RELATIVE_THETA_KEYS[mode]}{theta:g}"] = grid["emergence/relative"]
    metrics |= sparsity_baselines(acts)
    metrics["time/emergence_s"] = time.perf_counter() - t0
    return {"test/loss": test_loss, "test/acc": test_acc, **metrics,
            "pruning/sparsity": sparsity(model), "params/nonzero": float(n_params)}


def fit(model: UnitModel, opt: torch.optim.Optimizer, data: TensorData, probe: torch.Tensor,
        c: Config, first: int, last: int, on_epoch: OnEpoch) -> bool:
    """Train epochs first..last; after each, hand (epoch, metrics) to on_epoch, which may stop
    training by returning True. Returns whether it did.

    Shuffling is seeded by (seed, epoch), so a run resumed from a cached state at epoch k
    sees exactly the batches a run trained from scratch sees.
    """
    for epoch in range(first, last + 1):
        gen = torch.Generator().manual_seed(c.trainer.seed * 100_003 + epoch)
        t0 = time.perf_counter()
        loss, acc = train_epoch(model, opt, data.x_train, data.y_train, c.trainer.batch_size, gen)
        if not math.isfinite(loss):
            raise FloatingPointError(f"train/loss is {loss} at epoch {epoch}: training diverged "
                                     f"(trainer.lr={c.trainer.lr})")
        metrics = {"train/loss": loss, "train/acc": acc, **measure(model, data, probe, c)}
        metrics["time/epoch_s"] = time.perf_counter() - t0
        metrics["time/threads"] = float(torch.get_num_threads())  # the CPU threads it trained with
        if on_epoch(epoch, metrics):
            return True
    return False


class EpochLogger:
    """The per-epoch callback: log metrics, advance the progress bar, write checkpoints and,
    when armed, stop once emergence has stayed at or below trainer.stop_epsilon."""

    def __init__(self, run: tracking.Run, c: Config, model: UnitModel,
                 opt: torch.optim.Optimizer, workdir: Path):
        self.run, self.c, self.model, self.opt, self.workdir = run, c, model, opt, workdir
        self.bar = tqdm(total=c.trainer.epochs, desc=run_name(c), unit="epoch",
                        disable=None if c.tracking.progress else True, leave=False)
        self.best_acc = -1.0
        self.last: dict[str, float] = {}
        self.emergence: list[tuple[int, float]] = []  # (epoch, E) since the stopper was armed
        self.stopper_armed = False
        self.pruning_steps = 0  # pruning steps applied to the network, saved with checkpoints

    def __call__(self, epoch: int, metrics: dict[str, float], checkpoint: str = "all") -> bool:
        """Log one epoch; checkpoint "all" (last.pt, best.pt when best), "last" or "none"."""
        self.run.check_owner()  # never log into a run another process has taken over
        self.run.log_metrics(metrics, step=epoch)
        if "train/loss" in metrics:  # a training epoch of the run's own data set
            self.last = metrics
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{metrics['train/loss']:.3f}",
                                 acc=f"{metrics['test/acc']:.3f}")
            log.info("%s epoch %d: train/loss %.4f test/acc %.4f E %.4g", run_name(self.c),
                     epoch, metrics["train/loss"], metrics["test/acc"], metrics["emergence/E"])
        elif epoch == 0:
            self.last = metrics
        if checkpoint != "none" and self.c.trainer.checkpoints:
            self.checkpoint(epoch, metrics["test/acc"], best=checkpoint == "all")
        return self._should_stop(epoch, metrics)

    def _should_stop(self, epoch: int, metrics: dict[str, float]) -> bool:
        eps = self.c.trainer.stop_epsilon
        if not self.stopper_armed or eps is None:
            return False
        self.emergence.append((epoch, metrics["emergence/E"]))
        fired = stop_epoch(self.emergence, eps, self.c.trainer.stop_patience)
        if fired is not None:
            self.run.set_tags({"stopped_early_at": fired})
            log.info("%s: E <= %g for %d epochs, stopping at epoch %d", run_name(self.c), eps,
                     self.c.trainer.stop_patience, fired)
        return fired is not None

    def checkpoint(self, epoch: int, acc: float, best: bool = True) -> None:
        """Log last.pt (what a resumed run starts from), and best.pt when acc is the best so far
        of the network as it ends up (epochs before its last pruning step never count)."""
        last = self.workdir / "last.pt"
        save_checkpoint(last, self.model, self.opt, epoch=epoch, test_acc=acc,
                        pruning_steps=self.pruning_steps)
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
    model: UnitModel
    opt: torch.optim.Optimizer
    data: TensorData
    probe: torch.Tensor
    pretrain: tuple[TensorData, torch.Tensor] | None  # pretraining data and its probe set


def _prefix(s: Setup, upto: int, logger: EpochLogger
            ) -> Callable[[Callable[[], None]], dict[str, Any]]:
    """The training every sibling shares: pretraining, then epochs 1..upto of the run's data.
    `borrow()`, called before each epoch, takes up the threads of siblings waiting for it."""

    def compute(borrow: Callable[[], None]) -> dict[str, Any]:
        history: list[Row] = []
        borrow()

        def keep(epoch: int, metrics: dict[str, float], checkpoint: str = "last") -> bool:
            history.append((epoch, metrics))
            borrow()
            return logger(epoch, metrics, checkpoint)

        if s.pretrain:
            pre_data, pre_probe = s.pretrain
            fit(s.model, s.opt, pre_data, pre_probe, s.c, 1, s.c.pretrain.epochs,
                lambda e, m: keep(e, {f"pretrain/{k}": v for k, v in m.items()}, "none"))
        keep(0, measure(s.model, s.data, s.probe, s.c), "none")
        fit(s.model, s.opt, s.data, s.probe, s.c, 1, upto, keep)
        return {"model": s.model.state_dict(), "optimizer": optimizer_state(s.model, s.opt),
                "history": history}

    return compute


def _start_fresh(s: Setup, events: list[tuple[int, float]], device: torch.device,
                 run: tracking.Run, logger: EpochLogger) -> int:
    """Epoch 0, or the shared prefix (cached) up to the first pruning step; returns its epoch."""
    c = s.c
    upto = events[0][0] if events else 0
    if not events and not s.pretrain:
        logger(0, measure(s.model, s.data, s.probe, c), checkpoint="none")
        return 0
    key = prefix_key(c, [s.data.digest, s.pretrain[0].digest if s.pretrain else None], device)
    cache_dir = c.tracking.cache_dir or tracking.default_cache_dir(c.tracking.uri)
    # Threads left to torch (num_threads 0) may be lent by waiting siblings; a pinned count stays.
    payload, cached = shared_prefix(cache_dir, key, _prefix(s, upto, logger),
                                    lend=not c.trainer.num_threads)
    run.set_tags({"prefix_cache": "hit" if cached else "miss", "prefix_key": key})
    if cached:
        restore_state(payload, s.model, s.opt)
        for epoch, metrics in payload["history"]:
            logger(epoch, metrics, checkpoint="none")
    return upto


def _after_prune_lr(opt: torch.optim.Optimizer, c: Config) -> None:
    """trainer.lr_after_prune, when set, from the first pruning step on (the re-tuned lr of a
    pruned branch; the shared training before it keeps trainer.lr)."""
    if c.trainer.lr_after_prune is not None:
        for group in opt.param_groups:
            group["lr"] = c.trainer.lr_after_prune


def _train_branch(s: Setup, device: torch.device, run: tracking.Run, logger: EpochLogger,
                  resume: dict[str, Any] | None) -> None:
    """From epoch 0 (or a resumed checkpoint), prune-and-train segments to the last epoch."""
    c, p = s.c, s.c.pruning
    events = schedule(p.name, p.amount, p.epoch, p.steps, p.interval)
    if resume is None:
        epoch, done = _start_fresh(s, events, device, run, logger), 0
    else:
        epoch, done = resume["epoch"], resume.get("pruning_steps", 0)
        restore_state(resume, s.model, s.opt)
        logger.pruning_steps = done
        if done:
            _after_prune_lr(s.opt, c)
    before_final = lambda e, m: logger(e, m, checkpoint="last")  # noqa: E731 - not best.pt yet
    for i in range(done, len(events)):
        at, rate = events[i]
        if at > epoch and fit(s.model, s.opt, s.data, s.probe, c, epoch + 1, at, before_final):
            return
        epoch = at
        apply_pruning(s.model, p.name, rate, p.scope, seed=c.trainer.seed + at)
        after = measure(s.model, s.data, s.probe, c)
        run.log_metrics({"pruning/E_after": after["emergence/E"],
                         "pruning/relative_after": after["emergence/relative"],
                         "pruning/test_acc_after": after["test/acc"],
                         "pruning/sparsity_after": after["pruning/sparsity"]}, step=at)
        logger.pruning_steps = i + 1
        _after_prune_lr(s.opt, c)
        if c.trainer.checkpoints:
            logger.checkpoint(at, after["test/acc"], best=i + 1 == len(events))
    logger.stopper_armed = True  # only once the network is final
    fit(s.model, s.opt, s.data, s.probe, c, epoch + 1, c.trainer.epochs, logger)


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
    runner.preflight(c, device=False)
    data, probe = _load(c.dataset, device)
    pretrain = _load(c.pretrain.dataset, device) if c.pretrain.epochs else None
    identity, name, commit = config_hash(c), run_name(c), git_commit()
    tags = {"config_hash": identity, "git_commit": commit, "mlflow.source.git.commit": commit,
            "data_digest": data.digest, "dataset_label": data.label,
            "dataset": c.dataset.name, "model": c.model.name, "pruning": c.pruning.name,
            "device": str(device), "torch_threads": torch.get_num_threads(),
            "overrides": " ".join(overrides or [])[:5000]}
    got = runner.acquire(c, identity, name, tags, parent_run_id)
    if got.state == "skip":
        log.info("%s: skipped, FINISHED as run %s (force=true reruns it)", name, got.run_id)
        return dict(got.run.data.metrics)
    if got.state == "taken":
        log.warning("%s: skipped, run %s is being trained by %s", name, got.run_id, got.owner)
        return {}
    resumed = got.state == "resume"
    with tempfile.TemporaryDirectory() as workdir, tracking.Run(
            c.tracking.uri, c.tracking.experiment, name, tags, parent_run_id, run_id=got.run_id,
            owner=got.owner, resumed=resumed, heartbeat_s=c.tracking.heartbeat_s) as run:
        checkpoint = runner.resume_checkpoint(c.tracking.uri, run.run_id, Path(workdir)) \
            if resumed else None
        if not resumed:
            resolved = OmegaConf.to_container(cfg, resolve=True)
            resolved.pop("hydra", None)
            run.log_params(flatten(resolved))
            run.log_text(OmegaConf.to_yaml(resolved), "config.yaml")
            run.log_text("\n".join(overrides or []) + "\n", "overrides.txt")
        model = runner.build_network(c, tuple(data.x_train.shape[1:]), data.num_classes).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=c.trainer.lr,
                              momentum=c.trainer.momentum, weight_decay=c.trainer.weight_decay)
        logger = EpochLogger(run, c, model, opt, Path(workdir))
        try:
            _train_branch(Setup(c, model, opt, data, probe, pretrain), device, run, logger,
                          checkpoint)
        finally:
            logger.close()
        return dict(logger.last)
