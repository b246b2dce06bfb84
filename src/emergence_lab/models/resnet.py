"""The CIFAR ResNet of He et al. (2016), as open_lth's cifar_resnet_<depth>_<width>
(conf/model/resnet20.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from emergence_lab.models.base import MODELS, ModelConfig, ModelEntry
from emergence_lab.registry import check


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


@dataclass
class ResNetConfig(ModelConfig):
    name: str = "resnet"
    depth: int = 20  # 6n + 2 layers: n blocks per segment
    width: int = 16  # filters of the first segment (then 2x and 4x)

    def __post_init__(self) -> None:
        check(self.depth >= 8 and (self.depth - 2) % 6 == 0,
              f"model.depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 56, ...), got {self.depth}")
        check(self.width >= 1, f"model.width must be >= 1, got {self.width}")


MODELS.add(ModelEntry("resnet", ResNet, ResNetConfig, "ResNet", lambda s: f"resnet{s.depth}"
                      + (f"w{s.width}" if s.width != ResNetConfig.width else "")))
