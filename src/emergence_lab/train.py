"""One run: train, measure emergence every epoch, prune at the configured epoch, log to MLflow.

The loop is plain: `fit` trains epochs and hands each epoch's numbers to one callback, which
measures, logs and checkpoints. Runs that share their pre-prune training share it through
`checkpoint.shared_prefix`, and every branch still logs its whole curve from step 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from emergence_lab import tracking
from emergence_lab.checkpoint import optimizer_state, restore_state, save_checkpoint, shared_prefix
from emergence_lab.config import Config, validate
from emergence_lab.data import TensorData, load_dataset
from emergence_lab.emergence import active_counts, emergence_metrics
from emergence_lab.models import UnitModel, build_model, collect_activations
from emergence_lab.pruning import apply_pruning, sparsity, surviving_parameters

log = logging.getLogger(__name__)
Row = tuple[int, dict[str, float]]  # (epoch, metrics)


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short hash of a JSON-able object, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:length]


def identity_fields(c: Config, data_digest: str) -> dict[str, Any]:
    """The config fields that determine a run's result (no paths, devices or tracking)."""
    d = dataclasses.asdict(c)
    dataset = {k: v for k, v in d["dataset"].items() if k not in ("data_dir", "sources", "download")}
    trainer = {k: v for k, v in d["trainer"].items() if k not in ("device", "num_threads", "checkpoints")}
    return {"model": d["model"], "dataset": {**dataset, "digest": data_digest},
            "trainer": trainer, "pruning": d["pruning"], "threshold": d["threshold"]}


def prefix_key(fields: dict[str, Any], device: torch.device) -> str:
    """Cache key of the training before pruning: what shapes it, not the epochs after it."""
    trainer = {k: v for k, v in fields["trainer"].items() if k != "epochs"}
    return stable_hash({**fields, "trainer": trainer, "pruning": fields["pruning"]["epoch"],
                        "device": device.type}, length=20)


def run_name(c: Config) -> str:
    """A readable run name, e.g. fashion_mnist-mlp-magnitude0.5-seed0."""
    pruning = "none" if c.pruning.name == "none" else f"{c.pruning.name}{c.pruning.amount:g}"
    return f"{c.dataset.name}-{c.model.name}-{pruning}-seed{c.trainer.seed}"


def git_commit() -> str:
    """The commit of the code, 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict to dotted keys: {'a': {'b': 1}} -> {'a.b': 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def train_epoch(model: UnitModel, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator) -> tuple[float, float]:
    """One pass over shuffled index slices of in-memory tensors; (mean loss, accuracy)."""
    model.train()
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, x.shape[0], batch_size):
        idx = perm[start:start + batch_size]
        xb, yb = x[idx], y[idx]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Accumulate on the device: a .item() per batch would be a CPU-GPU sync point.
        loss_sum += loss.detach() * yb.shape[0]
        correct += (logits.argmax(1) == yb).sum()
    return loss_sum.item() / x.shape[0], correct.item() / x.shape[0]


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
    counts = active_counts(acts, c.threshold.theta, c.threshold.mode, c.threshold.min_fraction)
    n_params = surviving_parameters(model)
    metrics = emergence_metrics(counts, n_params)
    metrics["time/emergence_s"] = time.perf_counter() - t0
    return {"test/loss": test_loss, "test/acc": test_acc, **metrics,
            "pruning/sparsity": sparsity(model), "params/nonzero": float(n_params)}


def fit(model: UnitModel, opt: torch.optim.Optimizer, data: TensorData, probe: torch.Tensor,
        c: Config, first: int, last: int, on_epoch: Callable[[int, dict[str, float]], None]
        ) -> None:
    """Train epochs first..last; after each, hand (epoch, metrics) to on_epoch.

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
        on_epoch(epoch, metrics)


class EpochLogger:
    """The per-epoch callback: log metrics, advance the progress bar, write checkpoints."""

    def __init__(self, run: tracking.Run, c: Config, model: UnitModel,
                 opt: torch.optim.Optimizer, workdir: Path):
        self.run, self.c, self.model, self.opt, self.workdir = run, c, model, opt, workdir
        self.bar = tqdm(total=c.trainer.epochs, desc=run_name(c), unit="epoch",
                        disable=None if c.tracking.progress else True, leave=False)
        self.best_acc = -1.0
        self.last: dict[str, float] = {}

    def __call__(self, epoch: int, metrics: dict[str, float], checkpoint: bool = True) -> None:
        self.run.log_metrics(metrics, step=epoch)
        self.last = metrics
        if epoch > 0:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{metrics['train/loss']:.3f}",
                                 acc=f"{metrics['test/acc']:.3f}")
            log.info("%s epoch %d: train/loss %.4f test/acc %.4f E %.4g",
                     run_name(self.c), epoch, metrics["train/loss"], metrics["test/acc"],
                     metrics["emergence/E"])
        if checkpoint and self.c.trainer.checkpoints:
            self.checkpoint(epoch, metrics["test/acc"])

    def checkpoint(self, epoch: int, acc: float) -> None:
        """Log last.pt, and best.pt when acc is the best so far (of the network as it ends up:
        epochs before pruning are never checkpointed)."""
        names = ["last.pt"] + (["best.pt"] if acc > self.best_acc else [])
        self.best_acc = max(self.best_acc, acc)
        for name in names:
            path = self.workdir / name
            save_checkpoint(path, self.model, self.opt, epoch=epoch, test_acc=acc)
            self.run.log_artifact(path, "checkpoints")

    def close(self) -> None:
        self.bar.close()

    def summary(self) -> dict[str, float]:
        return dict(self.last)


def _train_with_prefix(c: Config, fields: dict[str, Any], device: torch.device,
                       model: UnitModel, opt: torch.optim.Optimizer, data: TensorData,
                       probe: torch.Tensor, run: tracking.Run, logger: EpochLogger) -> None:
    """Train to the prune epoch (or load siblings' shared state), prune, train on."""
    pe = c.pruning.epoch

    def compute() -> dict[str, Any]:
        history: list[Row] = []

        def keep(epoch: int, metrics: dict[str, float]) -> None:
            history.append((epoch, metrics))
            logger(epoch, metrics, checkpoint=False)

        keep(0, measure(model, data, probe, c))
        fit(model, opt, data, probe, c, 1, pe, keep)
        return {"model": model.state_dict(), "optimizer": optimizer_state(model, opt),
                "history": history}

    key = prefix_key(fields, device)
    cache_dir = c.tracking.cache_dir or tracking.default_cache_dir(c.tracking.uri)
    payload, cached = shared_prefix(cache_dir, key, compute)
    run.set_tags({"prefix_cache": "hit" if cached else "miss", "prefix_key": key})
    if cached:
        restore_state(payload, model, opt)
        for epoch, metrics in payload["history"]:
            logger(epoch, metrics, checkpoint=False)
    apply_pruning(model, c.pruning.name, c.pruning.amount, c.pruning.scope)
    after = measure(model, data, probe, c)
    run.log_metrics({"pruning/E_after": after["emergence/E"],
                     "pruning/relative_after": after["emergence/relative"],
                     "pruning/test_acc_after": after["test/acc"],
                     "pruning/sparsity_after": after["pruning/sparsity"]}, step=pe)
    if c.trainer.checkpoints:
        logger.checkpoint(pe, after["test/acc"])
    fit(model, opt, data, probe, c, pe + 1, c.trainer.epochs, logger)


def train(cfg: DictConfig, parent_run_id: str | None = None,
          overrides: list[str] | None = None) -> dict[str, float]:
    """Run one configuration end to end; returns the last epoch's metrics."""
    c = validate(cfg)
    if c.trainer.num_threads:
        torch.set_num_threads(c.trainer.num_threads)
    device = resolve_device(c.trainer.device)
    data = load_dataset(c.dataset)  # missing or corrupt data fails before a run exists
    fields = identity_fields(c, data.digest)
    data = data.to(device)
    probe = data.probe(c.dataset.probe_size, c.dataset.probe_seed)
    commit = git_commit()
    tags = {"config_hash": stable_hash(fields), "git_commit": commit,
            "mlflow.source.git.commit": commit, "data_digest": data.digest,
            "dataset": c.dataset.name, "model": c.model.name, "pruning": c.pruning.name,
            "device": str(device), "overrides": " ".join(overrides or [])[:5000]}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    with tracking.Run(c.tracking.uri, c.tracking.experiment, run_name(c), tags,
                      parent_run_id) as run, tempfile.TemporaryDirectory() as workdir:
        run.log_params(flatten(resolved))
        run.log_text(OmegaConf.to_yaml(resolved), "config.yaml")
        run.log_text("\n".join(overrides or []) + "\n", "overrides.txt")
        torch.manual_seed(c.trainer.seed)
        model = build_model(c.model.name, data.x_train.shape[1:], data.num_classes,
                            **{k: v for k, v in dataclasses.asdict(c.model).items() if k != "name"})
        model = model.to(device)
        opt = torch.optim.SGD(model.parameters(), lr=c.trainer.lr, momentum=c.trainer.momentum,
                              weight_decay=c.trainer.weight_decay)
        logger = EpochLogger(run, c, model, opt, Path(workdir))
        try:
            if c.pruning.name == "none":
                logger(0, measure(model, data, probe, c), checkpoint=False)
                fit(model, opt, data, probe, c, 1, c.trainer.epochs, logger)
            else:
                _train_with_prefix(c, fields, device, model, opt, data, probe, run, logger)
        finally:
            logger.close()
        return logger.summary()
