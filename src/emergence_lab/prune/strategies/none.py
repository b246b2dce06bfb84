"""No pruning: the unpruned control of a sweep without pruning (conf/pruning/none.yaml)."""

from __future__ import annotations

from torch import nn

from emergence_lab.prune.base import (
    STRATEGIES,
    Batch,
    Masks,
    PruningConfig,
    StrategyEntry,
)


def _no_pruning(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
                batch: Batch | None) -> Masks:
    return masks


STRATEGIES.add(StrategyEntry("none", _no_pruning, label="unpruned", prunes=False))
