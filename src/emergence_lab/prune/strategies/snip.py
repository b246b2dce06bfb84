"""SNIP, |g * w| on a batch (Lee et al. 2019; conf/pruning/snip.yaml); the settings and gradients
of every strategy that scores on training data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emergence_lab.prune.base import (
    STRATEGIES,
    Batch,
    Masks,
    PruningConfig,
    StrategyEntry,
    target_weights,
)
from emergence_lab.prune.masks import keep_top
from emergence_lab.registry import check


@dataclass
class BatchScoreConfig(PruningConfig):
    """Strategies that score on training data."""

    samples: int = 256  # training samples of the scoring batch

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.samples >= 1, f"pruning.samples must be >= 1, got {self.samples}")


def _masked_grads(model: nn.Module, weights: list[nn.Parameter], batch: Batch,
                  create_graph: bool = False, scale: float = 1.0) -> list[torch.Tensor]:
    loss = batch.loss(model(batch.x) / scale, batch.y)
    return list(torch.autograd.grad(loss, weights, create_graph=create_graph))


def _snip(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
          batch: Batch | None) -> Masks:
    model.eval()
    weights = target_weights(model, p)
    grads = _masked_grads(model, list(weights.values()), batch)
    scores = {k: (g * w).detach().abs() for (k, w), g in zip(weights.items(), grads, strict=True)}
    return keep_top(scores, masks, rate, p.scope)


STRATEGIES.add(StrategyEntry("snip", _snip, BatchScoreConfig, "SNIP", batch_field="samples"))
