"""What every model option shares: its settings' base class, its registry entry, the
activations a model setting can name, and `build_model`.

An option is one module of this package (found and imported by `emergence_lab.models`) that
calls `MODELS.add(...)`, and one YAML in conf/model/ extending its settings (`base_<name>`).
Nothing here says which modules hold the units emergence counts: `measure/graph.py` reads them
from the model's torch.fx trace (every activation call), so a model is any `nn.Module` whose
forward does not branch on data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING
from torch import nn

from emergence_lab.measure.graph import symbolic
from emergence_lab.registry import Registry, check

# what `model.activation` can name (the MLP's and CNN's hidden units); each is a unit
# activation of measure.graph
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU, "elu": nn.ELU,
}


def check_activation(name: str) -> None:
    check(name in ACTIVATIONS, f"model.activation must be one of {sorted(ACTIVATIONS)}, "
          f"got {name!r}")


def dense_blocks(width: int, hidden: Sequence[int],
                 activation: str = "relu") -> tuple[nn.ModuleList, int]:
    """Linear + activation blocks of the given widths after `width` inputs; (blocks, last width)."""
    blocks = []
    for units in hidden:
        blocks.append(nn.Sequential(nn.Linear(width, units), ACTIVATIONS[activation]()))
        width = units
    return nn.ModuleList(blocks), width


def forward_order(model: nn.Module, types: tuple[type[nn.Module], ...]) -> list[nn.Module]:
    """The model's modules of these types in the order its forward calls them (first call),
    from a torch.fx trace (cached on the model): not the order they were registered in."""
    names = model.__dict__.get("_forward_order")
    if names is None:
        graph = symbolic(model).graph
        names = list(dict.fromkeys(str(n.target) for n in graph.nodes if n.op == "call_module"))
        model.__dict__["_forward_order"] = names
    modules = dict(model.named_modules())
    return [modules[n] for n in names if isinstance(modules[n], types)]


@dataclass
class ModelConfig:
    """Settings every model has: its registry name."""

    name: str = MISSING


@dataclass(frozen=True)
class ModelEntry:
    """A model option: the class (built with the input shape, class count and the settings'
    fields), its settings dataclass, its label and its tag in run names."""

    name: str
    build: Callable[..., nn.Module]
    settings: type[ModelConfig]
    label: str
    tag: Callable[[Any], str] | None = None  # in run names (None: the name), e.g. resnet20w4

    def describe(self, settings: ModelConfig) -> str:
        return self.tag(settings) if self.tag else self.name


MODELS: Registry[ModelEntry] = Registry("model.name")


def build_model(settings: ModelConfig, in_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Instantiate the registered model that `settings.name` names, with its settings."""
    fields = {k: v for k, v in vars(settings).items() if k != "name"}
    model = MODELS[settings.name].build(in_shape=in_shape, num_classes=num_classes, **fields)
    model.input_shape = tuple(int(d) for d in in_shape)  # what a data-free score feeds it
    return model
