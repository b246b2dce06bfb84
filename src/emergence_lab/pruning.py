"""Magnitude pruning through torch.nn.utils.prune, and the parameter counts that depend on it.

Pruned weights are kept as `weight_orig * weight_mask` by prune's forward pre-hook, so they stay
exactly zero through optimizer steps; the mask is part of the state dict, so it survives a
checkpoint (see `prepare_for_state`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_modules(model: nn.Module) -> list[nn.Module]:
    """Linear and conv modules, whose weights pruning applies to (biases are never pruned)."""
    return [m for m in model.modules() if isinstance(m, PRUNABLE)]


def _magnitude(model: nn.Module, amount: float, scope: str) -> None:
    params = [(m, "weight") for m in prunable_modules(model)]
    if scope == "global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    else:
        for m, pname in params:
            prune.l1_unstructured(m, pname, amount=amount)


def _no_pruning(model: nn.Module, amount: float, scope: str) -> None:
    if amount != 0:
        raise ValueError(f"pruning 'none' takes amount 0, got {amount}")


# One function per strategy: (model, amount, scope) -> None, pruning in place.
STRATEGIES: dict[str, Callable[[nn.Module, float, str], None]] = {
    "none": _no_pruning,
    "magnitude": _magnitude,
}
SCOPES = ("global", "layerwise")


def apply_pruning(model: nn.Module, name: str, amount: float, scope: str = "global") -> None:
    """Prune `amount` of the weights in place; magnitude registers masks even at amount 0."""
    if name not in STRATEGIES:
        raise ValueError(f"pruning.name must be one of {sorted(STRATEGIES)}, got {name!r}")
    if scope not in SCOPES:
        raise ValueError(f"pruning.scope must be one of {list(SCOPES)}, got {scope!r}")
    if not 0 <= amount < 1:
        raise ValueError(f"pruning.amount must be in [0, 1), got {amount}")
    STRATEGIES[name](model, amount, scope)


def prepare_for_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Re-create pruning masks named in a state dict, so `load_state_dict` accepts it."""
    for mod_name, m in model.named_modules():
        key = f"{mod_name}.weight_mask" if mod_name else "weight_mask"
        if key in state and not prune.is_pruned(m) and isinstance(m, PRUNABLE):
            prune.identity(m, "weight")


def _weight_mask(m: nn.Module) -> torch.Tensor | None:
    return getattr(m, "weight_mask", None)


def sparsity(model: nn.Module) -> float:
    """Fraction of prunable weights that are pruned (masked to zero)."""
    total, pruned = 0, 0
    for m in prunable_modules(model):
        mask = _weight_mask(m)
        total += m.weight.numel()
        pruned += 0 if mask is None else int((mask == 0).sum().item())
    return pruned / total if total else 0.0


def surviving_parameters(model: nn.Module) -> int:
    """Parameters not pruned: weights whose mask is 1 (all, if unpruned) plus every other one."""
    count = 0
    for m in model.modules():
        for pname, p in m.named_parameters(recurse=False):
            mask = getattr(m, pname[: -len("_orig")] + "_mask", None) if pname.endswith("_orig") else None
            count += p.numel() if mask is None else int(mask.sum().item())
    return count


def refresh_pruned_weights(model: nn.Module) -> None:
    """Recompute `weight = weight_orig * weight_mask` now rather than at the next forward."""
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                hook(m, None)
