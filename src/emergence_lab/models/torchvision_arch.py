"""Any classification architecture of torchvision.models, adapted to the data set
(conf/model/torchvision.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from emergence_lab.models.base import MODELS, ModelConfig, ModelEntry
from emergence_lab.registry import check


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


@dataclass
class TorchvisionConfig(ModelConfig):
    name: str = "torchvision"
    arch: str = "resnet18"  # any name of torchvision.models.list_models(module=torchvision.models)

    def __post_init__(self) -> None:
        import torchvision

        choices = torchvision.models.list_models(module=torchvision.models)
        check(self.arch in choices, f"model.arch must be a torchvision classification model, "
              f"one of {choices}; got {self.arch!r}")


MODELS.add(ModelEntry("torchvision", torchvision_model, TorchvisionConfig, "torchvision",
                      lambda s: s.arch))
