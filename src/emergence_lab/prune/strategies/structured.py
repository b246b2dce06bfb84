"""Structured pruning: whole units (rows, filters, with what Torch-Pruning couples to them) by the L1
norm of their weights (conf/pruning/structured.yaml)."""

from __future__ import annotations

import torch
from torch import nn

from emergence_lab.prune.base import (
    PRUNABLE,
    STRATEGIES,
    UNITS,
    Batch,
    Masks,
    PruningConfig,
    StrategyEntry,
    prunable_modules,
    target_weights,
)


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


STRATEGIES.add(StrategyEntry("structured", _structured, label="structured", scopes=("layerwise",)))
