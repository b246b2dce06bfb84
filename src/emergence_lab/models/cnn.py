"""The paper's convolutional network (conf/model/cnn.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from emergence_lab.models.base import (
    ACTIVATIONS,
    MODELS,
    ModelConfig,
    ModelEntry,
    check_activation,
    dense_blocks,
)
from emergence_lab.registry import check


class CNN(nn.Module):
    """Conv blocks (conv, activation, max-pool), then fully connected layers and a linear head.

    Emergence counts each conv filter as one unit (its map averaged over positions), with the
    hidden linear units: pooling constrains the flow to filters (the paper's CNN form).
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, channels: Sequence[int],
                 hidden: Sequence[int], kernel_size: int = 3, pool: int = 2,
                 activation: str = "relu"):
        super().__init__()
        self.input_shape = tuple(int(d) for d in in_shape)
        c, h, w = (int(d) for d in in_shape)
        self.input = nn.Identity()
        convs = []
        for out in channels:
            convs.append(nn.Sequential(nn.Conv2d(c, out, kernel_size, padding=kernel_size // 2),
                                       ACTIVATIONS[activation](), nn.MaxPool2d(pool)))
            c, h, w = out, h // pool, w // pool
        if h < 1 or w < 1:
            raise ValueError(f"model.channels: {len(channels)} pooling stages of {pool} shrink a "
                             f"{tuple(in_shape)} input to nothing; use fewer conv blocks")
        self.convs = nn.ModuleList(convs)
        self.flatten = nn.Flatten()
        self.fcs, width = dense_blocks(c * h * w, hidden, activation)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input(x)
        for block in self.convs:
            x = block(x)
        x = self.flatten(x)
        for block in self.fcs:
            x = block(x)
        return self.head(x)


@dataclass
class CNNConfig(ModelConfig):
    name: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64])  # filters per conv block
    hidden: list[int] = field(default_factory=lambda: [128])  # fully connected widths
    kernel_size: int = 3
    pool: int = 2
    activation: str = "relu"  # of every conv filter and hidden unit: models.base.ACTIVATIONS

    def __post_init__(self) -> None:
        check(len(self.channels) > 0, "model.channels must list at least one conv block, got []")
        for field_name, widths in (("channels", self.channels), ("hidden", self.hidden)):
            for w in widths:
                check(w > 0, f"model.{field_name} widths must be > 0, got {list(widths)}")
        check(self.kernel_size >= 1, f"model.kernel_size must be >= 1, got {self.kernel_size}")
        check(self.pool >= 1, f"model.pool must be >= 1, got {self.pool}")
        check_activation(self.activation)


MODELS.add(ModelEntry("cnn", CNN, CNNConfig, "CNN",
                      lambda s: "cnn" + ("" if s.activation == "relu" else f"-{s.activation}")))
