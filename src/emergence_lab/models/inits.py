"""Initializations applied after torch's (conf/init/): a registry, one entry per option."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from emergence_lab.models.base import forward_order
from emergence_lab.registry import Registry, check


def emergence_init(model: nn.Module, alpha: float) -> None:
    """Emergence-promoting initialization (Li, George and Silva 2024, arXiv 2407.19044): the
    weights of the layer d steps before the middle weight layer are divided by alpha^d, those d
    steps after it multiplied by alpha^d; biases untouched. With an even number of weight
    layers the middle is the lower of the two (index (L - 1) // 2)."""
    layers = forward_order(model, (nn.Linear, nn.Conv1d, nn.Conv2d))
    middle = (len(layers) - 1) // 2
    with torch.no_grad():
        for i, layer in enumerate(layers):
            layer.weight.mul_(alpha ** (i - middle))


@dataclass
class InitConfig:
    """torch's default initialization (the settings every initialization has)."""

    name: str = "standard"


@dataclass
class EmergenceInitConfig(InitConfig):
    name: str = "emergence"
    alpha: float = 1.0  # weights of the layer d steps from the middle scaled by alpha^±d

    def __post_init__(self) -> None:
        check(self.alpha == self.alpha and abs(self.alpha) != float("inf") and self.alpha >= 1,
              f"init.alpha must be finite and >= 1 (1 = standard), got {self.alpha}")


@dataclass(frozen=True)
class InitEntry:
    """An initialization applied after torch's: (model, settings) -> None, in place; `tag`
    names a non-default one in run names ("" for none)."""

    name: str
    apply: Callable[[nn.Module, InitConfig], None]
    settings: type[InitConfig]
    tag: Callable[[InitConfig], str]


INITS: Registry[InitEntry] = Registry("init.name")
INITS.add(InitEntry("standard", lambda model, s: None, InitConfig, lambda s: ""))
INITS.add(InitEntry("emergence", lambda model, s: emergence_init(model, s.alpha),
                    EmergenceInitConfig, lambda s: f"emergence{s.alpha:g}"))
