"""open_lth's CIFAR VGG, cifar_vgg_<depth> (conf/model/vgg16.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from emergence_lab.models.base import MODELS, ModelConfig, ModelEntry
from emergence_lab.registry import check

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


@dataclass
class VGGConfig(ModelConfig):
    name: str = "vgg"
    depth: int = 16  # one of VGG_PLANS
    width: int = 64  # filters of the first conv; every layer scaled alike (64: the original)

    def __post_init__(self) -> None:
        check(self.depth in VGG_PLANS, f"model.depth must be one of {sorted(VGG_PLANS)}, "
              f"got {self.depth}")
        check(self.width >= 1, f"model.width must be >= 1, got {self.width}")


MODELS.add(ModelEntry("vgg", VGG, VGGConfig, "VGG", lambda s: f"vgg{s.depth}"
                      + (f"w{s.width}" if s.width != VGGConfig.width else "")))
