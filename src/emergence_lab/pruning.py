"""Pruning strategies through torch.nn.utils.prune, their schedules, and the counts that depend
on them (sparsity, surviving parameters, removed units).

torch.nn.utils.prune computes the masks. Between pruning steps the reparametrization is frozen
(`_freeze`): the weight is set to `weight_orig * weight_mask` once, the mask stays a buffer,
and a gradient hook multiplies the gradient by it, so pruned weights stay exactly zero under
any optimizer step (weight decay and momentum act on zero gradients of zero weights). Torch's
pre-forward hook would recompute the product every step: 40 % more time per epoch for the
MLP on one thread, measured. Masks are in the state dict, so they survive a checkpoint (see
`prepare_for_state`). A strategy is one function in STRATEGIES plus one YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_modules(model: nn.Module) -> list[nn.Module]:
    """Linear and conv modules in forward order (the last is the classifier head)."""
    return [m for m in model.modules() if isinstance(m, PRUNABLE)]


def _unstructured(method: type[prune.BasePruningMethod]) -> Callable[[nn.Module, float, str], None]:
    def strategy(model: nn.Module, amount: float, scope: str) -> None:
        params = [(m, "weight") for m in prunable_modules(model)]
        if scope == "global":
            prune.global_unstructured(params, pruning_method=method, amount=amount)
        else:
            for m, pname in params:
                method.apply(m, pname, amount=amount)
    return strategy


def _structured(model: nn.Module, amount: float, scope: str) -> None:
    """Remove the units (rows, filters) of each hidden layer with the smallest L1 norm: their
    weights and bias, and the next layer's weights that read them."""
    mods = prunable_modules(model)
    for layer, following in zip(mods[:-1], mods[1:], strict=True):
        w = layer.weight.detach()
        n_units = w.shape[0]
        k = min(round(amount * n_units), n_units - 1)
        alive = torch.ones(n_units, dtype=torch.bool, device=w.device)
        alive[w.abs().flatten(1).sum(1).argsort()[:k]] = False
        shape = (n_units,) + (1,) * (w.dim() - 1)
        prune.custom_from_mask(layer, "weight", alive.view(shape).expand_as(w).float())
        if layer.bias is not None:
            prune.custom_from_mask(layer, "bias", alive.float())
        fw = following.weight.detach()
        reads = torch.ones_like(fw).view(fw.shape[0], n_units, -1)  # conv->flatten: C*H*W inputs
        reads[:, ~alive, :] = 0
        prune.custom_from_mask(following, "weight", reads.view_as(fw))


def _no_pruning(model: nn.Module, amount: float, scope: str) -> None:
    if amount != 0:
        raise ValueError(f"pruning 'none' takes amount 0, got {amount}")


# One function per strategy: (model, amount of the remaining weights, scope) -> None, in place.
STRATEGIES: dict[str, Callable[[nn.Module, float, str], None]] = {
    "none": _no_pruning,
    "magnitude": _unstructured(prune.L1Unstructured),
    "random": _unstructured(prune.RandomUnstructured),
    "structured": _structured,
}
SCOPES = ("global", "layerwise")


def apply_pruning(model: nn.Module, name: str, amount: float, scope: str = "global",
                  seed: int = 0) -> None:
    """Prune `amount` of the remaining weights in place (masks are registered even at 0);
    random choices are drawn from `seed`, so a branch is reproducible."""
    if name not in STRATEGIES:
        raise ValueError(f"pruning.name must be one of {sorted(STRATEGIES)}, got {name!r}")
    if scope not in SCOPES:
        raise ValueError(f"pruning.scope must be one of {list(SCOPES)}, got {scope!r}")
    if not 0 <= amount < 1:
        raise ValueError(f"pruning.amount must be in [0, 1), got {amount}")
    _thaw(model)  # torch's pruning methods combine a new mask with the current one
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        STRATEGIES[name](model, amount, scope)
    freeze(model)


def _mask_gradients(m: nn.Module, pname: str) -> None:
    hooks = m.__dict__.setdefault("_mask_hooks", {})
    if pname in hooks:
        hooks[pname].remove()
    hooks[pname] = getattr(m, pname).register_hook(
        lambda grad, m=m, pname=pname: grad * getattr(m, f"{pname}_mask"))


def freeze(model: nn.Module) -> None:
    """Torch's reparametrization made permanent: weight = orig * mask, mask kept as a buffer,
    gradients masked. The Parameter object stays the same, so optimizers keep working."""
    for m in prunable_modules(model):
        for pname in ("weight", "bias"):
            if f"{pname}_orig" not in m._parameters:
                continue
            mask = m._buffers[f"{pname}_mask"]
            prune.remove(m, pname)
            m.register_buffer(f"{pname}_mask", mask)
            _mask_gradients(m, pname)


def _thaw(model: nn.Module) -> None:
    """Back to torch's reparametrization, before a further pruning step."""
    for m in prunable_modules(model):
        for pname in ("weight", "bias"):
            if f"{pname}_mask" not in m._buffers or f"{pname}_orig" in m._parameters:
                continue
            m.__dict__["_mask_hooks"].pop(pname).remove()
            mask = m._buffers.pop(f"{pname}_mask")
            prune.custom_from_mask(m, pname, mask)


def schedule(name: str, amount: float, epoch: int, steps: int = 1, interval: int = 1
             ) -> list[tuple[int, float]]:
    """(epoch, share of the remaining weights to prune) of each step: `steps` equal-rate steps
    `interval` epochs apart that together remove `amount` (one step: one-shot pruning)."""
    if name == "none":
        return []
    rate = 1 - (1 - amount) ** (1 / steps)
    return [(epoch + i * interval, rate) for i in range(steps)]


def prepare_for_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Re-create the pruning masks named in a state dict, so `load_state_dict` accepts it
    (call `freeze` after loading)."""
    for mod_name, m in model.named_modules():
        if not isinstance(m, PRUNABLE):
            continue
        for pname in ("weight", "bias"):
            key = f"{mod_name}.{pname}" if mod_name else pname
            if f"{key}_mask" not in state or hasattr(m, f"{pname}_mask"):
                continue
            if f"{key}_orig" in state:  # saved in torch's reparametrized form
                prune.identity(m, pname)
            else:
                m.register_buffer(f"{pname}_mask", torch.ones_like(getattr(m, pname)))
                _mask_gradients(m, pname)


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


def alive_units(producers: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Per unit layer, which units remain: a unit is removed when none of its incoming weights
    and not its bias survive (structured pruning); unstructured pruning removes none."""
    alive = {}
    for name, m in producers.items():
        w_mask, b_mask = getattr(m, "weight_mask", None), getattr(m, "bias_mask", None)
        if w_mask is None:
            continue
        keeps = w_mask.flatten(1).any(dim=1)
        if m.bias is not None:  # an unpruned bias keeps the unit alive
            keeps = keeps | (b_mask > 0 if b_mask is not None else torch.ones_like(keeps))
        alive[name] = keeps
    return alive


def surviving_parameters(model: nn.Module) -> int:
    """Parameters not pruned: weights whose mask is 1 (all, if unpruned) plus every other one."""
    count = 0
    for m in model.modules():
        for pname, p in m.named_parameters(recurse=False):
            mask = getattr(m, pname.removesuffix("_orig") + "_mask", None)
            count += p.numel() if mask is None else int(mask.sum().item())
    return count
