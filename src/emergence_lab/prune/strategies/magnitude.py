"""Magnitude pruning, |w| (Han et al. 2015); with reset=rewind, the lottery ticket of Frankle et al.
(conf/pruning/magnitude.yaml, lottery.yaml, ...)."""

from __future__ import annotations

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


def _magnitude(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
               batch: Batch | None) -> Masks:
    scores = {k: w.detach().abs() for k, w in target_weights(model, p).items()}
    return keep_top(scores, masks, rate, p.scope)


STRATEGIES.add(StrategyEntry("magnitude", _magnitude, label="magnitude"))
