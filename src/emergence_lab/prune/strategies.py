"""The pruning strategies: one `STRATEGIES.add(...)` each, with a YAML in conf/pruning/.

A strategy scores the network and returns masks (see `prune.core.StrategyEntry`); the schedule,
the resets and how masks are applied live in `prune/core.py`. Scores are "higher keeps":
`keep_top` removes the lowest ones, over all layers (scope global) or per layer.

- magnitude: |w| (Han et al. 2015; with reset=rewind, the lottery ticket of Frankle et al.)
- random: uniform scores, the control every pruning study needs
- structured: whole units (rows, filters, with what Torch-Pruning couples to them) by the L1
  norm of their weights
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

from emergence_lab.prune.core import (
    PRUNABLE,
    STRATEGIES,
    UNITS,
    Batch,
    Masks,
    NonFiniteScores,
    PruningConfig,
    StrategyEntry,
    keep_top,
    prunable_modules,
    prunable_weights,
    target_weights,
)
from emergence_lab.registry import check


def _no_pruning(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
                batch: Batch | None) -> Masks:
    return masks


def _magnitude(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
               batch: Batch | None) -> Masks:
    scores = {k: w.detach().abs() for k, w in target_weights(model, p).items()}
    return keep_top(scores, masks, rate, p.scope)


def _random(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
            batch: Batch | None) -> Masks:
    scores = {k: torch.rand(w.shape, device=w.device) for k, w in target_weights(model, p).items()}
    return keep_top(scores, masks, rate, p.scope)


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


def _structured(model: nn.Module, p: PruningConfig, rate: float, masks: Masks,
                batch: Batch | None) -> Masks:
    """Remove `rate` of the remaining units of each coupled group with the smallest L1 norm
    of the root layer's weights (the classifier head and the layers pruning.ignore names keep
    their units; a unit removed upstream still takes their input columns with it).
    Torch-Pruning's DependencyGraph finds what a unit takes with it:
    its weights and bias, the normalization channel after it, the layers that read it and,
    across residual sums, every layer whose channel is added to it. They are masked to zero
    (shapes stay, so checkpoints, resume and the shared prefix keep working)."""
    import torch_pruning as tp

    layers = prunable_modules(model)
    device = layers[0].weight.device
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(f"pruning=structured traces the network on an input: "
                         f"{type(model).__name__} must say its input_shape (C, H, W)")
    example = torch.zeros((1, *shape), device=device)
    model.eval()  # the dependency trace must not move batch-norm statistics
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    score = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="first", normalizer=None)
    names = {id(m): n for n, m in model.named_modules()}
    targets = target_weights(model, p)
    dense = [m for m in layers[:-1] if f"{names[id(m)]}.weight".lstrip(".") not in targets]
    out = dict(masks)
    for group in graph.get_all_groups(ignored_layers=[layers[-1], *dense],
                                      root_module_types=PRUNABLE):
        root = group[0].dep.target.module
        key = f"{names[id(root)]}.weight".lstrip(".")
        alive = out[key].flatten(1).any(dim=1)
        n_alive = int(alive.sum())
        k = min(round(rate * n_alive), n_alive - 1)
        if k <= 0:
            continue
        scores = score(group).to(device).masked_fill(~alive, float("inf"))
        drop = scores.argsort()[:k].tolist()
        root_fn = group[0].dep.handler
        for item in graph.get_pruning_group(root, root_fn, drop):
            module, idxs = item.dep.target.module, list(item.idxs)
            if id(module) not in names:
                continue  # Torch-Pruning's own nodes (sums, reshapes) hold no parameters
            _mask_channels(out, names[id(module)], module, idxs,
                           graph.is_out_channel_pruning_fn(item.dep.handler))
    return out


def _mask_channels(out: Masks, name: str, module: nn.Module, idxs: list[int], outputs: bool) -> None:
    """Zero the channels `idxs` of a module's parameters in `out`: the output rows (and bias)
    or input columns of a Linear/Conv, the entries of a per-channel parameter (batch norm)."""
    prefix = f"{name}." if name else ""
    if outputs and isinstance(module, PRUNABLE):
        key = prefix + UNITS
        units = out.get(key, torch.ones(module.weight.shape[0], device=module.weight.device)).clone()
        units[idxs] = 0
        out[key] = units
    for pname, param in module.named_parameters(recurse=False):
        key = prefix + pname
        mask = out.get(key, torch.ones_like(param)).clone()
        if isinstance(module, PRUNABLE) and pname == "weight":
            if not outputs and getattr(module, "groups", 1) != 1:
                raise ValueError(f"pruning=structured: {name} is a grouped convolution "
                                 f"(groups={module.groups}); its input channels cannot be "
                                 f"removed by masking")
            if outputs:
                mask[idxs] = 0
            else:
                mask[:, idxs] = 0
        elif param.dim() == 1 and (outputs or not isinstance(module, PRUNABLE)):
            mask[idxs] = 0
        else:
            continue
        out[key] = mask


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
