"""The fully connected network (conf/model/mlp.yaml; lenet_300_100.yaml is LeNet-300-100)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from emergence_lab.models.base import MODELS, ModelConfig, ModelEntry, check_activation, dense_blocks
from emergence_lab.registry import check


class MLP(nn.Module):
    """Fully connected network: input -> hidden widths (each with its activation) -> classes."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, hidden: Sequence[int],
                 activation: str = "relu"):
        super().__init__()
        self.input_shape = tuple(int(d) for d in in_shape)
        in_features = 1
        for d in in_shape:
            in_features *= int(d)
        self.flatten = nn.Flatten()
        self.blocks, width = dense_blocks(in_features, hidden, activation)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [512, 256])
    activation: str = "relu"  # of the hidden units: one of models.base.ACTIVATIONS

    def __post_init__(self) -> None:
        check(len(self.hidden) > 0, "model.hidden must list at least one width, got []")
        for w in self.hidden:
            check(w > 0, f"model.hidden widths must be > 0, got {list(self.hidden)}")
        check_activation(self.activation)


MODELS.add(ModelEntry("mlp", MLP, MLPConfig, "MLP",
                      lambda s: "mlp" + ("" if s.activation == "relu" else f"-{s.activation}")))
