"""The pruning strategies: one `STRATEGIES.add(...)` each, with a YAML in conf/pruning/.

A strategy scores the network and returns masks (see `pruning.StrategyEntry`); the schedule,
the resets and how masks are applied live in `pruning.py`. Scores are "higher keeps":
`keep_top` removes the lowest ones, over all layers (scope global) or per layer.

- magnitude: |w| (Han et al. 2015; with reset=rewind, the lottery ticket of Frankle et al.)
- random: uniform scores, the control every pruning study needs
- structured: whole units (rows, filters) by the L1 norm of their weights
- ticket_shuffle: the magnitude mask shuffled within each layer (open_lth's random-mask branch)
- snip: |g * w| on a batch (Lee et al. 2019)
- grasp: w * Hg on a batch, which keeps the gradient flow (Wang et al. 2020)
- synflow: iterative, data-free |w * dR/dw| with R the output sum for an all-ones input on |w|
  (Tanaka et al. 2020)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from emergence_lab.pruning import (
    STRATEGIES,
    Batch,
    Masks,
    PruningConfig,
    StrategyEntry,
    keep_top,
    prunable_modules,
    prunable_weights,
)
from emergence_lab.registry import check


def _no_pruning(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
                batch: Batch | None) -> Masks:
    return masks


def _magnitude(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
               batch: Batch | None) -> Masks:
    scores = {k: w.detach().abs() for k, w in prunable_weights(model).items()}
    return keep_top(scores, masks, rate, p.scope)


def _random(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
            batch: Batch | None) -> Masks:
    scores = {k: torch.rand(w.shape, device=w.device) for k, w in prunable_weights(model).items()}
    return keep_top(scores, masks, rate, p.scope)


def _ticket_shuffle(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
                    batch: Batch | None) -> Masks:
    """The magnitude mask's per-layer counts, at random places among each layer's survivors."""
    ticket = _magnitude(model, p, rate, masks, batch)
    out = dict(masks)
    for k in prunable_weights(model):
        alive = masks[k].reshape(-1).nonzero().squeeze(1)
        kept = int(ticket[k].sum())
        flat = torch.zeros(masks[k].numel(), device=masks[k].device, dtype=masks[k].dtype)
        flat[alive[torch.randperm(alive.numel(), device=alive.device)[:kept]]] = 1
        out[k] = flat.view_as(masks[k])
    return out


def _structured(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
                batch: Batch | None) -> Masks:
    """Remove `rate` of the remaining units of each hidden layer with the smallest L1 norm:
    their weights and bias, and the next layer's weights that read them."""
    out = dict(masks)
    keys = list(prunable_weights(model))
    mods = prunable_modules(model)
    for key, layer, nxt_key in zip(keys[:-1], mods[:-1], keys[1:], strict=True):
        w = layer.weight.detach()
        n_units = w.shape[0]
        alive = out[key].flatten(1).any(dim=1)
        norms = w.abs().flatten(1).sum(1).masked_fill(~alive, -1.0)  # removed units stay removed
        k = min(round(rate * int(alive.sum())), int(alive.sum()) - 1)
        alive = alive.clone()
        alive[norms.argsort()[: k + int((~alive).sum())]] = False
        out[key] = out[key] * alive.view((n_units,) + (1,) * (w.dim() - 1)).to(w.dtype)
        if layer.bias is not None:
            bias_key = key.removesuffix("weight") + "bias"
            out[bias_key] = out.get(bias_key, torch.ones_like(layer.bias)) * alive.to(w.dtype)
        reads = out[nxt_key].clone()
        reads.view(reads.shape[0], n_units, -1)[:, ~alive, :] = 0  # conv->flatten: C*H*W inputs
        out[nxt_key] = reads
    return out


@dataclass
class BatchScoreConfig(PruningConfig):
    """Strategies that score on training data."""

    samples: int = 256  # training samples of the scoring batch

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.samples >= 1, f"pruning.samples must be >= 1, got {self.samples}")


def _masked_grads(model: nn.Module, batch: Batch, create_graph: bool = False,
                  scale: float = 1.0) -> list[torch.Tensor]:
    weights = list(prunable_weights(model).values())
    loss = batch.loss(model(batch.x) / scale, batch.y)
    return list(torch.autograd.grad(loss, weights, create_graph=create_graph))


def _snip(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
          batch: Batch | None) -> Masks:
    model.eval()
    weights = prunable_weights(model)
    grads = _masked_grads(model, batch)
    scores = {k: (g * w).detach().abs() for (k, w), g in zip(weights.items(), grads, strict=True)}
    return keep_top(scores, masks, rate, p.scope)


@dataclass
class GraspConfig(BatchScoreConfig):
    temperature: float = 200.0  # the logits are divided by it (Wang et al.'s T)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.temperature > 0, f"pruning.temperature must be > 0, got {self.temperature}")


def _grasp(model: nn.Module, p: GraspConfig, rate: float, masks: Masks,
           batch: Batch | None) -> Masks:
    """Keep the weights whose removal would most reduce the gradient norm: score w * Hg, the
    Hessian-gradient product from a second backward pass (higher keeps)."""
    model.eval()
    weights = prunable_weights(model)
    g = [t.detach() for t in _masked_grads(model, batch, scale=p.temperature)]
    g_graph = _masked_grads(model, batch, create_graph=True, scale=p.temperature)
    z = sum((a * b).sum() for a, b in zip(g_graph, g, strict=True))
    hg = torch.autograd.grad(z, list(weights.values()))
    scores = {k: (w * h).detach() for (k, w), h in zip(weights.items(), hg, strict=True)}
    return keep_top(scores, masks, rate, p.scope)


@dataclass
class SynFlowConfig(PruningConfig):
    iterations: int = 100  # pruning rounds, each to an exponentially spaced sparsity

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.iterations >= 1, f"pruning.iterations must be >= 1, got {self.iterations}")


def _synflow(model: nn.Module, p: SynFlowConfig, rate: float, masks: Masks,
             batch: Batch | None) -> Masks:
    """Iterative synaptic flow: on a float64 copy with |w| and an all-ones input, score
    |w * dR/dw| with R the sum of the outputs, and prune to (1 - rate)^(i / iterations) of
    the remaining weights in round i."""
    net = copy.deepcopy(model).double().eval()
    weights = prunable_weights(net)
    with torch.no_grad():
        for prm in net.parameters():
            prm.abs_()
    device = next(iter(weights.values())).device
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(f"pruning=synflow feeds the network an all-ones input: "
                         f"{type(model).__name__} must say its input_shape (C, H, W)")
    x = torch.ones((1, *shape), dtype=torch.float64, device=device)
    out = dict(masks)
    density_before = 1.0
    for i in range(1, p.iterations + 1):
        with torch.no_grad():
            for k, w in weights.items():
                w.mul_(out[k])
        grads = torch.autograd.grad(net(x).sum(), list(weights.values()))
        scores = {k: (w * g).detach().abs().float() for (k, w), g
                  in zip(weights.items(), grads, strict=True)}
        density = (1 - rate) ** (i / p.iterations)
        out = keep_top(scores, out, 1 - density / density_before, p.scope)
        density_before = density
    return out


STRATEGIES.add(StrategyEntry("none", _no_pruning, label="unpruned", prunes=False))
STRATEGIES.add(StrategyEntry("magnitude", _magnitude, label="magnitude"))
STRATEGIES.add(StrategyEntry("random", _random, label="random"))
STRATEGIES.add(StrategyEntry("structured", _structured, label="structured",
                             scopes=("layerwise",)))
STRATEGIES.add(StrategyEntry("ticket_shuffle", _ticket_shuffle,
                             label="shuffled ticket"))
STRATEGIES.add(StrategyEntry("snip", _snip, BatchScoreConfig, "SNIP", batch_field="samples"))
STRATEGIES.add(StrategyEntry("grasp", _grasp, GraspConfig, "GraSP", batch_field="samples"))
STRATEGIES.add(StrategyEntry("synflow", _synflow, SynFlowConfig, "SynFlow"))
