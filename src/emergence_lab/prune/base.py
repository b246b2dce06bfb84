"""The pruning settings (`PruningConfig`), what a strategy, schedule and reset are (their registry
entries and registries), the weights a strategy may prune, and a pruning's name in run names."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emergence_lab.models import forward_order
from emergence_lab.registry import Registry, check

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


SCOPES = ("global", "layerwise")


Masks = dict[str, torch.Tensor]  # "<module path>.<param>" -> 0/1 tensor of the param's shape


PAPER_STRATEGY = "magnitude"  # the paper's: one-shot global magnitude pruning
CONTROL_IDENTITY = PAPER_STRATEGY  # a control (amount 0) of any strategy has the identity of
# the paper's strategy at amount 0: the strategies of a sweep share one control
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

    def __post_init__(self) -> None:
        """A trait that names a settings field must name one (checked when the option registers,
        so a typo fails at import, before any config is composed)."""
        fields = {f.name: f for f in dataclasses.fields(self.settings)}
        for trait, names in (("batch_field", [self.batch_field] if self.batch_field else []),
                             ("prefix_fields", list(self.prefix_fields))):
            for name in names:
                check(name in fields, f"pruning strategy {self.name!r}: {trait}={name!r} is not a "
                      f"field of {self.settings.__name__}; its fields: {sorted(fields)}")

    def check_settings(self, settings: Any) -> None:
        """The settings' batch size, when the strategy scores on a batch: an int >= 1 (checked
        when the config is validated)."""
        if self.batch_field is not None:
            n = getattr(settings, self.batch_field)
            check(isinstance(n, int) and not isinstance(n, bool) and n >= 1,
                  f"pruning.{self.batch_field} (the training samples pruning={self.name} scores "
                  f"on) must be an integer >= 1, got {n!r}")


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


class NonFiniteScores(ValueError):
    """A layer's scores hold inf or nan: a mask ranked on them would be arbitrary."""
