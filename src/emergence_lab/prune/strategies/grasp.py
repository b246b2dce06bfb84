"""GraSP, w * Hg on a batch, which keeps the gradient flow (Wang et al. 2020; conf/pruning/grasp.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emergence_lab.prune.base import (
    STRATEGIES,
    Batch,
    Masks,
    StrategyEntry,
    prunable_weights,
    target_weights,
)
from emergence_lab.prune.masks import keep_top
from emergence_lab.prune.strategies.snip import BatchScoreConfig, _masked_grads
from emergence_lab.registry import check


@dataclass
class GraspConfig(BatchScoreConfig):
    temperature: float = 200.0  # the logits are divided by it (Wang et al.'s T)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.temperature > 0, f"pruning.temperature must be > 0, got {self.temperature}")


def _grasp(model: nn.Module, p: GraspConfig, rate: float, masks: Masks,
           batch: Batch | None) -> Masks:
    """Keep the weights whose removal would most reduce the gradient norm: score w * Hg, the
    Hessian-gradient product from a second backward pass (higher keeps). The gradient is that
    of every prunable weight (layers left dense by pruning.ignore included); only the targets
    are scored."""
    model.eval()
    weights = prunable_weights(model)
    ws = list(weights.values())
    g = [t.detach() for t in _masked_grads(model, ws, batch, scale=p.temperature)]
    g_graph = _masked_grads(model, ws, batch, create_graph=True, scale=p.temperature)
    z = sum((a * b).sum() for a, b in zip(g_graph, g, strict=True))
    hg = torch.autograd.grad(z, ws)
    targets = target_weights(model, p)
    scores = {k: (w * h).detach() for (k, w), h in zip(weights.items(), hg, strict=True)
              if k in targets}
    return keep_top(scores, masks, rate, p.scope)


STRATEGIES.add(StrategyEntry("grasp", _grasp, GraspConfig, "GraSP", batch_field="samples"))
