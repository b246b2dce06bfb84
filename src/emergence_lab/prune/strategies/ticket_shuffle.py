"""The magnitude mask shuffled within each layer, open_lth's random-mask branch
(conf/pruning/lottery_random.yaml)."""

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
from emergence_lab.prune.strategies.magnitude import _magnitude


def _ticket_shuffle(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
                    batch: Batch | None) -> Masks:
    """The magnitude mask's per-layer counts, at random places among each layer's survivors."""
    ticket = _magnitude(model, p, rate, masks, batch)
    out = dict(masks)
    for k in target_weights(model, p):
        alive = masks[k].reshape(-1).nonzero().squeeze(1)
        kept = int(ticket[k].sum())
        flat = torch.zeros(masks[k].numel(), device=masks[k].device, dtype=masks[k].dtype)
        flat[alive[torch.randperm(alive.numel(), device=alive.device)[:kept]]] = 1
        out[k] = flat.view_as(masks[k])
    return out


STRATEGIES.add(StrategyEntry("ticket_shuffle", _ticket_shuffle, label="shuffled ticket"))
