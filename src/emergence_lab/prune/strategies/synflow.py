"""SynFlow: iterative, data-free |w * dR/dw| with R the output sum for an all-ones input on |w|
(Tanaka et al. 2020; conf/pruning/synflow.yaml)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from emergence_lab.prune.base import (
    STRATEGIES,
    Batch,
    Masks,
    NonFiniteScores,
    PruningConfig,
    StrategyEntry,
    prunable_weights,
    target_weights,
)
from emergence_lab.prune.masks import keep_top
from emergence_lab.registry import check


@dataclass
class SynFlowConfig(PruningConfig):
    iterations: int = 100  # pruning rounds, each to an exponentially spaced sparsity

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.iterations >= 1, f"pruning.iterations must be >= 1, got {self.iterations}")


def _synflow(model: nn.Module, p: SynFlowConfig, rate: float, masks: Masks,
             batch: Batch | None) -> Masks:
    """Iterative synaptic flow: on a float64 copy whose parameters and buffers are made
    non-negative (the authors' `linearize`) and an all-ones input, score |w * dR/dw| with R the
    sum of the outputs, and prune to (1 - rate)^(i / iterations) of the remaining weights in
    round i. The scores stay float64 through the ranking: R passes float32's 3.4e38 on deep
    nets (1.2e51 on ResNet-56), where a cast would make every score inf. Where R passes even
    float64's 1.8e308, the run stops with an error naming the layer where the flow overflows."""
    net = copy.deepcopy(model).double().eval()
    weights = prunable_weights(net)
    with torch.no_grad():
        for t in (*net.parameters(), *net.buffers()):
            if t.is_floating_point():
                t.abs_()
    device = next(iter(weights.values())).device
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(f"pruning=synflow feeds the network an all-ones input: "
                         f"{type(model).__name__} must say its input_shape (C, H, W)")
    x = torch.ones((1, *shape), dtype=torch.float64, device=device)
    targets = set(target_weights(model, p))
    out = dict(masks)
    density_before = 1.0
    for i in range(1, p.iterations + 1):
        with torch.no_grad():
            for k, w in weights.items():
                w.mul_(out[k])
        flow = net(x).sum()
        if not torch.isfinite(flow):
            raise NonFiniteScores(f"the synaptic flow R overflows float64 (1.8e308) at "
                                  f"{_first_overflow(net, x)} in round {i}: the network is too "
                                  f"deep for a product of |w| over its paths")
        grads = torch.autograd.grad(flow, list(weights.values()))
        scores = {k: (w * g).detach().abs() for (k, w), g
                  in zip(weights.items(), grads, strict=True) if k in targets}
        density = (1 - rate) ** (i / p.iterations)
        out = keep_top(scores, out, 1 - density / density_before, p.scope)
        density_before = density
    return out


def _first_overflow(net: nn.Module, x: torch.Tensor) -> str:
    """The first module, in call order, whose output is not finite (a network's name)."""
    seen: list[str] = []
    hooks = [m.register_forward_hook(
        lambda mod, inp, outp, name=name: seen.append(name)
        if isinstance(outp, torch.Tensor) and not torch.isfinite(outp).all() else None)
        for name, m in net.named_modules() if name]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return seen[0] if seen else "the output"


STRATEGIES.add(StrategyEntry("synflow", _synflow, SynFlowConfig, "SynFlow"))
