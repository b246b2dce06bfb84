"""Any nn.Module class of the user's, built with Hydra's `instantiate` (conf/model/custom.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from emergence_lab.models.base import MODELS, ModelConfig, ModelEntry
from emergence_lab.registry import check


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


@dataclass
class CustomModelConfig(ModelConfig):
    name: str = "custom"
    _target_: str = ""  # a class path, e.g. my_package.MyNet(in_shape, num_classes, **kwargs)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(isinstance(self._target_, str) and "." in self._target_,
              f"model=custom needs model._target_=<a class path like my_package.MyNet>, "
              f"got {self._target_!r}")


MODELS.add(ModelEntry("custom", custom_model, CustomModelConfig, "custom",
                      lambda s: s._target_.rpartition(".")[2]))
