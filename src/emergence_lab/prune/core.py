"""Pruning masks, schedules and resets: how a strategy's masks are applied to a network.

A strategy (see `prune/strategies.py`) gets the network, its settings, the current masks and, when it
asks for one, a batch of training data with the loss; it returns the new masks. It never sees
how masks are applied: here each mask is a buffer `<param>_mask` beside its parameter, the
parameter is multiplied by it once, and a gradient hook multiplies the gradient by it, so pruned
weights stay exactly zero under any optimizer step (weight decay and momentum act on zero
gradients of zero weights). A pre-forward product (torch's reparametrization) would cost 40 %
more time per epoch for the MLP on one thread, measured. Masks are in the state dict, so they
survive a checkpoint (see `prepare_for_state`).

The schedule (when, and how much of what remains, each step prunes) is separate from the score,
so any strategy runs under any schedule; the reset says where the surviving weights restart
from after a step (lottery-ticket rewinding, a fresh init).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from emergence_lab.measure.probe import surviving_parameters  # noqa: F401 - re-exported
from emergence_lab.models import forward_order
from emergence_lab.registry import Registry, check

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
SCOPES = ("global", "layerwise")
Masks = dict[str, torch.Tensor]  # "<module path>.<param>" -> 0/1 tensor of the param's shape
UNITS = "units"  # "<module path>.units": the output units structured pruning removed (0)


def prunable_modules(model: nn.Module) -> list[nn.Module]:
    """Linear and conv modules in forward order (the last is the classifier head)."""
    return forward_order(model, PRUNABLE)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight of every prunable module, by "<module path>.weight", in forward order."""
    names = {id(m): n for n, m in model.named_modules()}
    return {f"{names[id(m)]}.weight".lstrip("."): m.weight for m in prunable_modules(model)}


def ignored(name: str, patterns: list[str] | tuple[str, ...]) -> bool:
    """Whether a parameter name matches one of `pruning.ignore`'s shell-style patterns."""
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


def target_weights(model: nn.Module, p: PruningConfig) -> dict[str, nn.Parameter]:
    """The prunable weights a strategy may prune: every Linear and Conv weight but those
    `pruning.ignore` leaves dense, in forward order."""
    return {k: w for k, w in prunable_weights(model).items() if not ignored(k, p.ignore)}


def check_ignore(model: nn.Module, p: PruningConfig) -> None:
    """Every `pruning.ignore` pattern names at least one prunable weight of this model, and
    at least one weight is left to prune (checked before any run starts)."""
    names = list(prunable_weights(model))
    for pat in p.ignore:
        check(any(fnmatch.fnmatchcase(n, pat) for n in names),
              f"pruning.ignore: {pat!r} matches no prunable parameter of this model; they are "
              f"{names}")
    check(not STRATEGIES[p.name].prunes or p.amount == 0 or len(target_weights(model, p)) > 0,
          f"pruning.ignore={list(p.ignore)} leaves every prunable parameter dense ({names}): "
          f"nothing is left to prune")


@dataclass
class PruningConfig:
    """Settings every strategy has; a strategy with more extends this class."""

    name: str = "none"
    amount: float = 0.0  # fraction of the weights removed by the end of the schedule, in [0, 1)
    epoch: int = 0  # the first step falls after this many epochs (0: at initialization)
    scope: str = "global"  # global: one threshold over all layers; layerwise: each layer alike
    schedule: str = "equal"  # how `amount` is split into steps (see SCHEDULES)
    steps: int = 1  # pruning steps ...
    interval: int = 1  # ... this many epochs apart
    reset: str = "none"  # where survivors restart from after each step (see RESETS)
    rewind_epoch: int = 0  # reset=rewind: the epoch whose weights survivors are reset to
    ignore: list[str] = field(default_factory=list)  # weights left dense: patterns over names


    def __post_init__(self) -> None:
        entry = STRATEGIES.entry_for(self)
        check(self.scope in entry.scopes, f"pruning.scope must be one of {list(entry.scopes)} "
              f"with pruning={self.name}, got {self.scope!r}")
        check(0 <= self.amount < 1, f"pruning.amount must be in [0, 1), got {self.amount}")
        check(entry.prunes or self.amount == 0,
              f"pruning.amount must be 0 with pruning={self.name}, got {self.amount}")
        check(self.epoch >= 0, f"pruning.epoch must be >= 0, got {self.epoch}")
        check(self.steps >= 1, f"pruning.steps must be >= 1, got {self.steps}")
        check(self.interval >= 1, f"pruning.interval must be >= 1, got {self.interval}")
        SCHEDULES[self.schedule]  # noqa: B018 - an unknown name raises with the choices
        RESETS[self.reset]  # noqa: B018
        check(all(isinstance(pat, str) and pat for pat in self.ignore),
              f"pruning.ignore must be a list of parameter-name patterns (e.g. [head.weight]), "
              f"got {self.ignore!r}")
        check(0 <= self.rewind_epoch <= self.epoch, f"pruning.rewind_epoch must be in [0, "
              f"pruning.epoch={self.epoch}] (a state the run has before it prunes), "
              f"got {self.rewind_epoch}")


@dataclass(frozen=True)
class Batch:
    """Training data a strategy scores with: inputs, labels and the training loss."""

    x: torch.Tensor
    y: torch.Tensor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy


@dataclass(frozen=True)
class StrategyEntry:
    """A pruning strategy: prune(model, settings, amount of the remaining weights, current
    masks, batch or None) -> new masks. Its traits: the scopes it supports, whether it prunes
    at all, the training samples it needs (a settings field, or None), and the settings fields
    that change training before the first pruning step (the prefix-cache key includes them)."""

    name: str
    prune: Callable[[nn.Module, Any, float, Masks, Batch | None], Masks]
    settings: type[PruningConfig] = PruningConfig
    label: str = ""
    scopes: tuple[str, ...] = SCOPES
    prunes: bool = True
    batch_field: str | None = None
    prefix_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScheduleEntry:
    """When each step falls and how much of the remaining weights it prunes:
    events(amount, epoch, steps, interval) -> [(epoch, rate)]."""

    name: str
    events: Callable[[float, int, int, int], list[tuple[int, float]]]
    label: str


@dataclass(frozen=True)
class ResetEntry:
    """Where the surviving weights restart from after a pruning step: a state from `sources`
    (Sources.rewind: the saved state at pruning.rewind_epoch; Sources.fresh(): a new random
    init), or None to keep training the pruned network as it is."""

    name: str
    state: Callable[[Any], dict[str, Any] | None]
    tag: Callable[[Any], str]  # in names: "" for none, e.g. rewind1
    prefix_fields: tuple[str, ...] = ()  # what the shared prefix must keep for it


STRATEGIES: Registry[StrategyEntry] = Registry("pruning.name")
SCHEDULES: Registry[ScheduleEntry] = Registry("pruning.schedule")
RESETS: Registry[ResetEntry] = Registry("pruning.reset")


def _equal(amount: float, epoch: int, steps: int, interval: int) -> list[tuple[int, float]]:
    rate = 1 - (1 - amount) ** (1 / steps)
    return [(epoch + i * interval, rate) for i in range(steps)]


def _cubic(amount: float, epoch: int, steps: int, interval: int) -> list[tuple[int, float]]:
    """Zhu & Gupta (2017): sparsity s_t = amount * (1 - (1 - t / steps)^3) after step t."""
    target = [amount * (1 - (1 - t / steps) ** 3) for t in range(steps + 1)]
    return [(epoch + (t - 1) * interval, 1 - (1 - target[t]) / (1 - target[t - 1]))
            for t in range(1, steps + 1)]


SCHEDULES.add(ScheduleEntry("equal", _equal, "equal steps"))
SCHEDULES.add(ScheduleEntry("cubic", _cubic, "gradual (cubic)"))
RESETS.add(ResetEntry("none", lambda sources: None, lambda p: ""))
RESETS.add(ResetEntry("rewind", lambda sources: sources.rewind, lambda p: f"rewind{p.rewind_epoch}",
                      ("rewind_epoch",)))
RESETS.add(ResetEntry("reinit", lambda sources: sources.fresh(), lambda p: "reinit"))


def schedule(p: PruningConfig) -> list[tuple[int, float]]:
    """(epoch, share of the remaining weights to prune) of each step; none for a strategy that
    never prunes."""
    if not STRATEGIES[p.name].prunes:
        return []
    return SCHEDULES[p.schedule].events(p.amount, p.epoch, p.steps, p.interval)


def describe(p: PruningConfig, sep: str = "-", amount: bool = True, label: bool = False) -> str:
    """A short name of the pruning settings, e.g. magnitude0.5, magnitude0.5x3-layerwise,
    snip0.8, magnitude0.8x8-cubic, magnitude0.5x3-rewind1 (for a report: no amount, and the
    strategy's label: 'SNIP', 'magnitude x3 rewind1'); the defaults are left out."""
    entry, default = STRATEGIES[p.name], PruningConfig()
    if not entry.prunes:
        return p.name
    name = entry.label if label else p.name
    steps = [f"x{p.steps}"] if p.steps > 1 else []
    parts = [f"{name}{p.amount:g}" + "".join(steps)] if amount else [name, *steps]
    parts += [p.scope] if p.scope != entry.scopes[0] else []
    parts += [p.schedule] if p.schedule != default.schedule else []
    parts += [t] if (t := RESETS[p.reset].tag(p)) else []
    parts += [f"dense({','.join(p.ignore)})"] if p.ignore else []
    return sep.join(parts)


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


class NonFiniteScores(ValueError):
    """A layer's scores hold inf or nan: a mask ranked on them would be arbitrary."""


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


from emergence_lab.prune import strategies  # noqa: E402, F401 - registers the strategies
