"""Random pruning: uniform scores, the control every pruning study needs (conf/pruning/random.yaml)."""

from __future__ import annotations

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


def _random(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
            batch: Batch | None) -> Masks:
    scores = {k: torch.rand(w.shape, device=w.device) for k, w in target_weights(model, p).items()}
    return keep_top(scores, masks, rate, p.scope)


STRATEGIES.add(StrategyEntry("random", _random, label="random"))
