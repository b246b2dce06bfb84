"""The plain training loop: one epoch, evaluation, the per-epoch measurements, and `fit`,
which trains epochs and hands each one, as an `Epoch`, to every callback it is given (as
open_lth's `train(..., callbacks)`); a callback that returns True stops training. The loop knows
none of them: logging, progress, checkpoints, measurement storage and early stopping are
`run/callbacks.py`'s. Everything around it (the shared prefix, pruning steps) is in
`run/stages.py`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emergence_lab.config import Config
from emergence_lab.data import TensorData
from emergence_lab.measure import keys
from emergence_lab.measure.baselines import sparsity_baselines
from emergence_lab.measure.counting import COUNTINGS
from emergence_lab.measure.graph import UNIT_LAYER_KINDS, cached_unit_graph
from emergence_lab.measure.probe import Measurement, counts_metrics
from emergence_lab.measure.probe import measure as measure_units
from emergence_lab.measure.setting import Setting
from emergence_lab.prune.masks import sparsity
from emergence_lab.run.execution import Execution, eager

Row = tuple[int, dict[str, float]]  # (epoch, metrics)


@dataclasses.dataclass
class Branch:
    """What the run's training has done to its network so far (saved with its checkpoints):
    pruning steps applied, the state a reset rewinds to, and whether the network is final (no
    pruning step ahead: the only epochs early stopping reads)."""

    pruning_steps: int = 0
    rewind: dict[str, Any] | None = None
    final: bool = False


@dataclasses.dataclass(frozen=True)
class Epoch:
    """What every callback is handed after an epoch (or a pruning step): its number, its
    metrics (and the measurement under keys.MEASUREMENT), the network and its optimizer, the
    branch's state, the phase (pretrain, epoch, pruned), whether it was loaded from the shared
    prefix rather than trained here, and which checkpoints it asks for (all: last.pt and best.pt
    when best; last; None: none)."""

    epoch: int
    metrics: dict[str, Any]
    model: nn.Module
    opt: torch.optim.Optimizer
    branch: Branch
    phase: str = "epoch"
    loaded: bool = False
    checkpoint: str | None = "all"


Callback = Callable[[Epoch], bool | None]  # True: stop training


def notify(callbacks: Sequence[Callback], e: Epoch) -> bool:
    """Hand `e` to every callback in order; whether one of them asked to stop."""
    stop = False
    for callback in callbacks:
        stop = bool(callback(e)) or stop
    return stop


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator, ex: Execution | None = None
                ) -> tuple[float, float]:
    """One pass over shuffled index slices of in-memory tensors; (mean loss, accuracy). The
    steps call `ex.forward` (the compiled module, under autocast) where given."""
    ex = ex or eager(model)
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
        with ex.autocast(x.device):
            logits = ex.forward(xb)
            loss = F.cross_entropy(logits, yb)
        ex.step(loss, opt)
        losses.append(loss.detach().float())
        predicted[start:start + batch_size] = logits.argmax(1)
    sizes = torch.full((len(losses),), float(batch_size), device=x.device)
    sizes[-1] = n - batch_size * (len(losses) - 1)  # the last batch may be short
    mean_loss = (torch.stack(losses) * sizes).sum() / n
    return mean_loss.item(), (predicted == y[perm]).sum().item() / n


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
             ex: Execution | None = None) -> tuple[float, float]:
    """(mean loss, accuracy) over a data split, in eval mode."""
    ex = ex or eager(model)
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, x.shape[0], batch_size):
        with ex.autocast(x.device):
            logits = ex.forward(x[start:start + batch_size])
        yb = y[start:start + batch_size]
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    return loss_sum.item() / x.shape[0], correct.item() / x.shape[0]


def emergence_metrics(m: Measurement, c: Config) -> dict[str, float]:
    """E in the paper's setting (emergence/E) with the active share of each layer; E in the
    configured setting and both countings of each under their own keys; the θ grid."""
    t = c.threshold
    layers = tuple(t.layers)
    paper = Setting(layers=layers)
    out = counts_metrics(m.at(paper))
    settings = {x.normalized() for s in (paper, t.setting()) for x in
                (s, *(s.with_counting(k) for k in COUNTINGS.names()))}
    for s in sorted(settings - {paper.normalized()}, key=keys.setting_keys):
        e = m.at(s)
        k_e, k_rel = keys.setting_keys(s)
        out[k_e], out[k_rel] = float(e.E), e.relative
    for rule in keys.THETA_KEYS:  # the rules whose θ grid has keys of its own (metric-key schema)
        for theta in t.grid:
            e = m.at(Setting(rule, theta, paper.counting, t.min_fraction, layers))
            out[f"{keys.THETA_KEYS[rule]}{theta:g}"] = float(e.E)
            out[f"{keys.RELATIVE_THETA_KEYS[rule]}{theta:g}"] = e.relative
    return out


def measure(model: nn.Module, data: TensorData, probe: torch.Tensor, c: Config,
            ex: Execution | None = None) -> dict[str, float]:
    """Test metrics (through `ex`), emergence on the probe set (the eager model, fp32),
    sparsity and surviving parameters; under keys.MEASUREMENT the measurement itself (what E
    needs under any other setting)."""
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test, c.trainer.eval_batch_size, ex)
    t0 = time.perf_counter()
    graph = cached_unit_graph(model, probe[:1], UNIT_LAYER_KINDS)
    m, live = measure_units(model, probe, c.trainer.eval_batch_size, graph)
    metrics = emergence_metrics(m, c)
    counted = {n for n, kind in m.kinds.items() if kind in c.threshold.layers}
    metrics |= sparsity_baselines({n: a for n, a in live.items() if n in counted})
    metrics[keys.EMERGENCE_TIME] = time.perf_counter() - t0
    if data.x_val is not None:  # what the stoppers and the convergence claims read
        metrics[keys.VAL_LOSS], metrics[keys.VAL_ACC] = evaluate(
            model, data.x_val, data.y_val, c.trainer.eval_batch_size, ex)
    return {keys.TEST_LOSS: test_loss, keys.TEST_ACC: test_acc, **metrics,
            keys.SPARSITY: sparsity(model), keys.PARAMS: float(m.n_params),
            keys.MEASUREMENT: m.to_state()}


def fit(model: nn.Module, opt: torch.optim.Optimizer, data: TensorData, probe: torch.Tensor,
        c: Config, first: int, last: int, callbacks: Sequence[Callback],
        ex: Execution | None = None, *, branch: Branch, phase: str = "epoch",
        checkpoint: str | None = "all", prefix: str = "") -> bool:
    """Train epochs first..last; after each, hand it to every callback (`phase`, `checkpoint`
    and `branch` as given; metric keys led by `prefix`, as pretraining's are), stopping when
    one asks. Returns whether one did.

    Shuffling is seeded by (seed, epoch), so a run resumed from a cached state at epoch k
    sees exactly the batches a run trained from scratch sees.
    """
    for epoch in range(first, last + 1):
        gen = torch.Generator().manual_seed(c.trainer.seed * 100_003 + epoch)
        t0 = time.perf_counter()
        loss, acc = train_epoch(model, opt, data.x_train, data.y_train, c.trainer.batch_size, gen,
                                ex)
        if not math.isfinite(loss):
            raise FloatingPointError(f"train/loss is {loss} at epoch {epoch}: training diverged "
                                     f"(trainer.lr={c.trainer.lr})")
        metrics = {keys.TRAIN_LOSS: loss, keys.TRAIN_ACC: acc, **measure(model, data, probe, c, ex)}
        metrics[keys.EPOCH_TIME] = time.perf_counter() - t0
        metrics[keys.THREADS] = float(torch.get_num_threads())  # the CPU threads it trained with
        if prefix:
            metrics = {f"{prefix}{k}": v for k, v in metrics.items() if k != keys.MEASUREMENT}
        if notify(callbacks, Epoch(epoch, metrics, model, opt, branch, phase,
                                   checkpoint=checkpoint)):
            return True
    return False
