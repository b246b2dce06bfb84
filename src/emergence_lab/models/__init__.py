"""The models: each a class, a settings dataclass and a registry line.

Nothing here says which modules hold the units emergence counts: `measure/graph.py` reads them from
the model's torch.fx trace (every activation call), so a model is any `nn.Module` whose forward
does not branch on data. Built-in options: mlp (lenet_300_100 is its YAML), cnn, resnet (the
CIFAR ResNet of He et al. 2016 as in open_lth), vgg (open_lth's CIFAR VGG), torchvision (any
classification architecture of torchvision.models, adapted to the data set) and custom (any
class, built with Hydra's `instantiate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from emergence_lab.measure.graph import symbolic
from emergence_lab.registry import Registry, check


def dense_blocks(width: int, hidden: Sequence[int]) -> tuple[nn.ModuleList, int]:
    """Linear + ReLU blocks of the given widths after `width` inputs; (blocks, last width)."""
    blocks = []
    for units in hidden:
        blocks.append(nn.Sequential(nn.Linear(width, units), nn.ReLU()))
        width = units
    return nn.ModuleList(blocks), width


class MLP(nn.Module):
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


class CNN(nn.Module):
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


class ResNetBlock(nn.Module):
    """Two 3x3 convs with batch norm around a shortcut (a 1x1 conv where the shape changes)."""

    def __init__(self, f_in: int, f_out: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.shortcut = nn.Sequential()
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(f_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016), as open_lth's cifar_resnet_<depth>_<width>: a 3x3
    conv, three segments of (depth - 2) / 6 blocks with width, 2 width and 4 width filters,
    global average pooling and a linear head. resnet20 = depth 20, width 16."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, depth: int = 20, width: int = 16):
        super().__init__()
        self.input_shape = tuple(int(d) for d in in_shape)
        blocks_per_segment = (depth - 2) // 6
        self.conv = nn.Conv2d(int(in_shape[0]), width, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, current = [], width
        for segment, filters in enumerate((width, 2 * width, 4 * width)):
            for index in range(blocks_per_segment):
                blocks.append(ResNetBlock(current, filters, segment > 0 and index == 0))
                current = filters
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(current, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


VGG_PLANS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512],
}


class VGG(nn.Module):
    """open_lth's CIFAR VGG (cifar_vgg_<depth>): 3x3 conv + batch norm + ReLU modules with
    max-pooling, a 2x2 average pool and one linear layer. `width` scales every plan entry
    (64: the original)."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, depth: int = 16, width: int = 64):
        super().__init__()
        self.input_shape = tuple(int(d) for d in in_shape)
        pools = VGG_PLANS[depth].count("M")
        if min(int(d) for d in in_shape[1:]) < 2 ** pools:
            raise ValueError(f"model=vgg (depth {depth}) max-pools {pools} times: its inputs "
                             f"must be at least {2 ** pools}x{2 ** pools}, got {tuple(in_shape)}")
        layers: list[nn.Module] = []
        filters = int(in_shape[0])
        for spec in VGG_PLANS[depth]:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out = max(1, int(spec) * width // 64)
            layers += [nn.Conv2d(filters, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            filters = out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(filters, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(x)), 1))


def torchvision_model(in_shape: Sequence[int], num_classes: int, arch: str) -> nn.Module:
    """A torchvision classification architecture (random init), its head sized by num_classes
    and its first convolution re-made for the data set's channels."""
    import torchvision

    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    channels = int(in_shape[0])
    first = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    conv = model.get_submodule(first) if first else None
    if conv is not None and conv.in_channels != channels:
        parent, _, attr = first.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, nn.Conv2d(
            channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, bias=conv.bias is not None))
    return model


def custom_model(in_shape: Sequence[int], num_classes: int, _target_: str,
                 kwargs: dict[str, Any]) -> nn.Module:
    """Any nn.Module class, built by Hydra's instantiate as
    `target(in_shape=..., num_classes=..., **kwargs)`."""
    from hydra.utils import instantiate

    model = instantiate({"_target_": _target_, **kwargs}, in_shape=list(in_shape),
                        num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model._target_={_target_} built a {type(model).__name__}, "
                         f"not an nn.Module")
    return model


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


@dataclass
class ResNetConfig(ModelConfig):
    name: str = "resnet"
    depth: int = 20  # 6n + 2 layers: n blocks per segment
    width: int = 16  # filters of the first segment (then 2x and 4x)

    def __post_init__(self) -> None:
        check(self.depth >= 8 and (self.depth - 2) % 6 == 0,
              f"model.depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 56, ...), got {self.depth}")
        check(self.width >= 1, f"model.width must be >= 1, got {self.width}")


@dataclass
class VGGConfig(ModelConfig):
    name: str = "vgg"
    depth: int = 16  # one of VGG_PLANS
    width: int = 64  # filters of the first conv; every layer scaled alike (64: the original)

    def __post_init__(self) -> None:
        check(self.depth in VGG_PLANS, f"model.depth must be one of {sorted(VGG_PLANS)}, "
              f"got {self.depth}")
        check(self.width >= 1, f"model.width must be >= 1, got {self.width}")


@dataclass
class TorchvisionConfig(ModelConfig):
    name: str = "torchvision"
    arch: str = "resnet18"  # any name of torchvision.models.list_models(module=torchvision.models)

    def __post_init__(self) -> None:
        import torchvision

        choices = torchvision.models.list_models(module=torchvision.models)
        check(self.arch in choices, f"model.arch must be a torchvision classification model, "
              f"one of {choices}; got {self.arch!r}")


@dataclass
class CustomModelConfig(ModelConfig):
    name: str = "custom"
    _target_: str = ""  # a class path, e.g. my_package.MyNet(in_shape, num_classes, **kwargs)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(isinstance(self._target_, str) and "." in self._target_,
              f"model=custom needs model._target_=<a class path like my_package.MyNet>, "
              f"got {self._target_!r}")


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
MODELS.add(ModelEntry("mlp", MLP, MLPConfig, "MLP"))
MODELS.add(ModelEntry("cnn", CNN, CNNConfig, "CNN"))
MODELS.add(ModelEntry("resnet", ResNet, ResNetConfig, "ResNet", lambda s: f"resnet{s.depth}"
                      + (f"w{s.width}" if s.width != ResNetConfig.width else "")))
MODELS.add(ModelEntry("vgg", VGG, VGGConfig, "VGG", lambda s: f"vgg{s.depth}"
                      + (f"w{s.width}" if s.width != VGGConfig.width else "")))
MODELS.add(ModelEntry("torchvision", torchvision_model, TorchvisionConfig, "torchvision",
                      lambda s: s.arch))
MODELS.add(ModelEntry("custom", custom_model, CustomModelConfig, "custom",
                      lambda s: s._target_.rpartition(".")[2]))


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


def build_model(settings: ModelConfig, in_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Instantiate the registered model that `settings.name` names, with its settings."""
    fields = {k: v for k, v in vars(settings).items() if k != "name"}
    model = MODELS[settings.name].build(in_shape=in_shape, num_classes=num_classes, **fields)
    model.input_shape = tuple(int(d) for d in in_shape)  # what a data-free score feeds it
    return model

