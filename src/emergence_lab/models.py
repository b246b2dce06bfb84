"""Models with named unit layers, and the forward hooks that read their activations.

A model lists the modules whose outputs are the units that emergence counts (`unit_layers`);
everything else here is generic, so a new architecture only adds a class and a registry line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from omegaconf import MISSING
from torch import nn

from emergence_lab.registry import Registry, check

UNIT_LAYER_KINDS = ("input", "hidden", "output")


class UnitModel(nn.Module):
    """Base class: a classifier that names its input, hidden and output unit layers."""

    def hidden_units(self) -> dict[str, nn.Module]:
        """Modules whose outputs are the hidden units (post-activation), in forward order."""
        raise NotImplementedError

    def unit_producers(self) -> dict[str, nn.Module]:
        """The Linear or Conv module that feeds each hidden unit layer (same keys)."""
        raise NotImplementedError

    def input_module(self) -> nn.Module:
        """The module whose output is the input as the network sees it."""
        raise NotImplementedError

    def output_module(self) -> nn.Module:
        """The module that produces the logits."""
        raise NotImplementedError

    def unit_layers(self, kinds: Sequence[str]) -> dict[str, tuple[nn.Module, Callable | None]]:
        """(module, transform of its output) per counted layer, in forward order."""
        unknown = sorted(set(kinds) - set(UNIT_LAYER_KINDS))
        if unknown:
            raise ValueError(f"unknown unit layers {unknown}; valid: {list(UNIT_LAYER_KINDS)}")
        layers: dict[str, tuple[nn.Module, Callable | None]] = {}
        if "input" in kinds:
            layers["input"] = (self.input_module(), None)
        if "hidden" in kinds:
            layers.update({name: (m, None) for name, m in self.hidden_units().items()})
        if "output" in kinds:
            # The output layer's post-activation is the softmax over classes.
            layers["output"] = (self.output_module(), lambda t: t.softmax(dim=1))
        return layers


def dense_blocks(width: int, hidden: Sequence[int]) -> tuple[nn.ModuleList, int]:
    """Linear + ReLU blocks of the given widths after `width` inputs; (blocks, last width)."""
    blocks = []
    for units in hidden:
        blocks.append(nn.Sequential(nn.Linear(width, units), nn.ReLU()))
        width = units
    return nn.ModuleList(blocks), width


class MLP(UnitModel):
    """Fully connected ReLU network: input -> hidden widths -> classes."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, hidden: Sequence[int]):
        super().__init__()
        self.input_shape = tuple(int(d) for d in in_shape)
        in_features = 1
        for d in in_shape:
            in_features *= int(d)
        self.flatten = nn.Flatten()
        self.blocks, width = dense_blocks(in_features, hidden)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def hidden_units(self) -> dict[str, nn.Module]:
        return {f"hidden{i + 1}": block[1] for i, block in enumerate(self.blocks)}

    def unit_producers(self) -> dict[str, nn.Module]:
        return {f"hidden{i + 1}": block[0] for i, block in enumerate(self.blocks)}

    def input_module(self) -> nn.Module:
        return self.flatten

    def output_module(self) -> nn.Module:
        return self.head


class CNN(UnitModel):
    """Conv blocks (conv, ReLU, max-pool), then fully connected ReLU layers and a linear head.

    Emergence counts each conv filter as one unit (its map averaged over positions), with the
    hidden linear units: pooling constrains the flow to filters (the paper's CNN form).
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, channels: Sequence[int],
                 hidden: Sequence[int], kernel_size: int = 3, pool: int = 2):
        super().__init__()
        self.input_shape = tuple(int(d) for d in in_shape)
        c, h, w = (int(d) for d in in_shape)
        self.input = nn.Identity()
        convs = []
        for out in channels:
            convs.append(nn.Sequential(nn.Conv2d(c, out, kernel_size, padding=kernel_size // 2),
                                       nn.ReLU(), nn.MaxPool2d(pool)))
            c, h, w = out, h // pool, w // pool
        if h < 1 or w < 1:
            raise ValueError(f"model.channels: {len(channels)} pooling stages of {pool} shrink a "
                             f"{tuple(in_shape)} input to nothing; use fewer conv blocks")
        self.convs = nn.ModuleList(convs)
        self.flatten = nn.Flatten()
        self.fcs, width = dense_blocks(c * h * w, hidden)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input(x)
        for block in self.convs:
            x = block(x)
        x = self.flatten(x)
        for block in self.fcs:
            x = block(x)
        return self.head(x)

    def hidden_units(self) -> dict[str, nn.Module]:
        return self._named(1)

    def unit_producers(self) -> dict[str, nn.Module]:
        return self._named(0)

    def _named(self, index: int) -> dict[str, nn.Module]:
        convs = {f"conv{i + 1}": block[index] for i, block in enumerate(self.convs)}
        return {**convs, **{f"hidden{i + 1}": block[index] for i, block in enumerate(self.fcs)}}

    def input_module(self) -> nn.Module:
        return self.input

    def output_module(self) -> nn.Module:
        return self.head


def forward_order(model: nn.Module, types: tuple[type[nn.Module], ...]) -> list[nn.Module]:
    """The model's modules of these types in the order its forward calls them (first call),
    from a torch.fx trace (cached on the model): not the order they were registered in."""
    names = model.__dict__.get("_forward_order")
    if names is None:
        try:
            graph = torch.fx.symbolic_trace(model).graph
        except Exception as exc:
            raise ValueError(f"cannot trace {type(model).__name__} with torch.fx to find its layer "
                             f"order ({type(exc).__name__}: {exc}); its forward must not branch "
                             f"on data") from None
        names = list(dict.fromkeys(str(n.target) for n in graph.nodes if n.op == "call_module"))
        model.__dict__["_forward_order"] = names
    modules = dict(model.named_modules())
    return [modules[n] for n in names if isinstance(modules[n], types)]


@dataclass
class ModelConfig:
    """Settings every model has: its registry name."""

    name: str = MISSING


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [512, 256])

    def __post_init__(self) -> None:
        check(len(self.hidden) > 0, "model.hidden must list at least one width, got []")
        for w in self.hidden:
            check(w > 0, f"model.hidden widths must be > 0, got {list(self.hidden)}")


@dataclass
class CNNConfig(ModelConfig):
    name: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64])  # filters per conv block
    hidden: list[int] = field(default_factory=lambda: [128])  # fully connected widths
    kernel_size: int = 3
    pool: int = 2

    def __post_init__(self) -> None:
        check(len(self.channels) > 0, "model.channels must list at least one conv block, got []")
        for field_name, widths in (("channels", self.channels), ("hidden", self.hidden)):
            for w in widths:
                check(w > 0, f"model.{field_name} widths must be > 0, got {list(widths)}")
        check(self.kernel_size >= 1, f"model.kernel_size must be >= 1, got {self.kernel_size}")
        check(self.pool >= 1, f"model.pool must be >= 1, got {self.pool}")


@dataclass(frozen=True)
class ModelEntry:
    """A model option: the class (built with the input shape, class count and the settings'
    fields), its settings dataclass and its label."""

    name: str
    build: Callable[..., UnitModel]
    settings: type[ModelConfig]
    label: str


MODELS: Registry[ModelEntry] = Registry("model.name")
MODELS.add(ModelEntry("mlp", MLP, MLPConfig, "MLP"))
MODELS.add(ModelEntry("cnn", CNN, CNNConfig, "CNN"))


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


def build_model(settings: ModelConfig, in_shape: Sequence[int], num_classes: int) -> UnitModel:
    """Instantiate the registered model that `settings.name` names, with its settings."""
    fields = {k: v for k, v in vars(settings).items() if k != "name"}
    model = MODELS[settings.name].build(in_shape=in_shape, num_classes=num_classes, **fields)
    model.input_shape = tuple(int(d) for d in in_shape)  # what a data-free score feeds it
    return model


@torch.no_grad()
def collect_activations(
    model: UnitModel, x: torch.Tensor, kinds: Sequence[str], batch_size: int = 1024
) -> dict[str, torch.Tensor]:
    """Per-sample unit activations, (samples, units) per counted layer, from forward hooks.

    Conv maps (samples, channels, ...) are averaged over positions: a filter is one unit.
    """
    layers = model.unit_layers(kinds)
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def hook_for(name: str, transform: Callable | None):
        def hook(_module, _inputs, output):
            out = transform(output) if transform else output
            chunks[name].append(out.flatten(2).mean(dim=2) if out.dim() > 2 else out)
        return hook

    handles = [m.register_forward_hook(hook_for(n, t)) for n, (m, t) in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, x.shape[0], batch_size):
            model(x[start:start + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in chunks.items()}
