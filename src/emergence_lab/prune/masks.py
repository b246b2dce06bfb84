"""How masks are applied to a network, and a pruning step (`apply_pruning`).

A strategy (see `prune/strategies/`) gets the network, its settings, the current masks and, when
it asks for one, a batch of training data with the loss; it returns the new masks. It never sees
how masks are applied: here each mask is a buffer `<param>_mask` beside its parameter, the
parameter is multiplied by it once, and a gradient hook multiplies the gradient by it, so pruned
weights stay exactly zero under any optimizer step (weight decay and momentum act on zero
gradients of zero weights). A pre-forward product (torch's reparametrization) would cost 40 %
more time per epoch for the MLP on one thread, measured. Masks are in the state dict, so they
survive a checkpoint (see `prepare_for_state`). Scores are "higher keeps": `keep_top` removes the
lowest ones, over all layers (scope global) or per layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune

from emergence_lab.prune.base import (
    STRATEGIES,
    UNITS,
    Batch,
    Masks,
    NonFiniteScores,
    PruningConfig,
    prunable_modules,
    prunable_weights,
)


def current_masks(model: nn.Module) -> Masks:
    """Each prunable weight's mask (ones where none was applied yet), and every other mask that
    was applied (biases, the channels of a normalization layer removed with a unit)."""
    masks: Masks = {}
    for (name, w), m in zip(prunable_weights(model).items(), prunable_modules(model), strict=True):
        masks[name] = m.weight_mask if hasattr(m, "weight_mask") else torch.ones_like(w)
    for mod_name, m in model.named_modules():
        for pname in [p for p, _ in m.named_parameters(recurse=False)] + [UNITS]:
            key = f"{mod_name}.{pname}".lstrip(".")
            if key not in masks and hasattr(m, f"{pname}_mask"):
                masks[key] = getattr(m, f"{pname}_mask")
    return masks


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Set each named parameter's mask (a buffer beside it), zero what it removes, and mask
    its gradients from now on. A `<module>.units` mask only records which output units
    structured pruning removed (what emergence counts as units)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, mask in masks.items():
            mod_name, _, pname = key.rpartition(".")
            m = modules[mod_name]
            if pname == UNITS:
                m.register_buffer(f"{UNITS}_mask", mask.to(device=m.weight.device,
                                                          dtype=m.weight.dtype))
                continue
            param = getattr(m, pname)
            mask = mask.to(dtype=param.dtype, device=param.device)
            m.register_buffer(f"{pname}_mask", mask)
            param.mul_(mask)
            _mask_gradients(m, pname)


def training_batch(x: torch.Tensor, y: torch.Tensor, n: int, seed: int) -> Batch:
    """n training samples drawn with `seed` (what a strategy that scores on data sees)."""
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    idx = idx.to(x.device)
    return Batch(x[idx], y[idx])


def apply_pruning(model: nn.Module, p: PruningConfig, rate: float, seed: int = 0,
                  data: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Prune `rate` of the remaining weights in place with the strategy `p` names (masks are
    registered even at 0); random choices are drawn from `seed`, so a branch is reproducible.
    `data` (training inputs, labels) is needed by strategies that score on a batch."""
    entry = STRATEGIES[p.name]
    if not 0 <= rate < 1:
        raise ValueError(f"pruning rate must be in [0, 1), got {rate}")
    batch = None
    if entry.batch_field is not None and rate > 0:
        if data is None:
            raise ValueError(f"pruning={p.name} scores on training data; none was given")
        batch = training_batch(*data, getattr(p, entry.batch_field), seed)
    old = current_masks(model)
    was_training = model.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            new = entry.prune(model, p, rate, old, batch) if rate > 0 else old
        except NonFiniteScores as exc:
            raise ValueError(f"pruning={p.name}: {exc}") from None
    model.train(was_training)
    model.zero_grad(set_to_none=True)  # scores may leave gradients; training starts clean
    apply_masks(model, {k: v * old[k] if k in old else v for k, v in new.items()})


def keep_top(scores: Mapping[str, torch.Tensor], masks: Masks, rate: float, scope: str,
             tie_seed: int | None = None) -> Masks:
    """Masks that remove `rate` of the remaining weights with the lowest scores: over all
    layers at once (global) or in each layer (layerwise). Removed weights stay removed; layers
    without scores are left as they are. The count is round(rate * remaining). Scores are
    compared in their own dtype (float64 stays float64). Ties at the threshold are broken by a
    permutation drawn from `tie_seed` (default: the seed `apply_pruning` set), so one seed
    always gives one mask. A score that is not finite raises `NonFiniteScores`, naming its
    layer."""
    seed = torch.initial_seed() if tie_seed is None else tie_seed
    groups = [list(scores)] if scope == "global" else [[k] for k in scores]
    out = dict(masks)
    for keys in groups:
        alive = [masks[k].bool() for k in keys]
        parts = [scores[k][a] for k, a in zip(keys, alive, strict=True)]
        for k, part in zip(keys, parts, strict=True):
            bad = int((~torch.isfinite(part)).sum())
            if bad:
                raise NonFiniteScores(f"{bad} of {part.numel()} scores of {k} are not finite "
                                      f"(inf or nan): its mask cannot be ranked")
        remaining = torch.cat(parts)
        n_prune = round(rate * remaining.numel())
        if n_prune == 0:
            continue
        drop = lowest(remaining, n_prune, seed)
        start = 0
        for k, a in zip(keys, alive, strict=True):
            n = int(a.sum())
            flat = out[k].clone().reshape(-1)
            where = a.reshape(-1).nonzero().squeeze(1)
            flat[where[drop[start:start + n]]] = 0
            out[k] = flat.view_as(masks[k])
            start += n
    return out


def lowest(values: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """A boolean mask of the `n` lowest of `values` (1-D): everything below the n-th smallest
    value, and of the values equal to it as many as are needed, chosen by a permutation drawn
    from `seed` (on the CPU, so every device picks the same)."""
    if n >= values.numel():
        return torch.ones_like(values, dtype=torch.bool)
    threshold = values.kthvalue(n).values
    drop = values < threshold
    tied = (values == threshold).nonzero().squeeze(1)
    need = n - int(drop.sum())
    if need < tied.numel():
        order = torch.randperm(tied.numel(), generator=torch.Generator().manual_seed(seed))
        tied = tied[order[:need].to(tied.device)]
    drop[tied] = True
    return drop


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


def prepare_for_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Re-create the pruning masks named in a state dict, so `load_state_dict` accepts it
    (call `freeze` after loading)."""
    for mod_name, m in model.named_modules():
        for pname in ("weight", "bias", UNITS):
            key = f"{mod_name}.{pname}" if mod_name else pname
            if f"{key}_mask" not in state or hasattr(m, f"{pname}_mask"):
                continue
            if f"{key}_orig" in state:  # saved in torch's reparametrized form
                prune.identity(m, pname)
            elif pname == UNITS:
                apply_masks(model, {key: torch.ones(m.weight.shape[0])})
            else:
                apply_masks(model, {key: torch.ones_like(getattr(m, pname))})


def sparsity(model: nn.Module) -> float:
    """Fraction of prunable weights that are pruned (masked to zero)."""
    total, pruned = 0, 0
    for m in prunable_modules(model):
        mask = getattr(m, "weight_mask", None)
        total += m.weight.numel()
        pruned += 0 if mask is None else int((mask == 0).sum().item())
    return pruned / total if total else 0.0
