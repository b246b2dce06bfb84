"""Any nn.Module class of the user's, built with Hydra's `instantiate` (conf/model/custom.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from emergence_lab.models.base import MODELS, ModelConfig, ModelEntry
from emergence_lab.registry import check


def model_class(target: str) -> type[nn.Module]:
    """The nn.Module subclass a class path names (its module imported); ValueError otherwise.
    Nothing is called: a path to a function (os.system, shutil.copyfile) is refused here."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception as exc:
        raise ValueError(f"model._target_={target}: cannot be imported "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ValueError(f"model._target_={target} is a {type(obj).__name__}, not an nn.Module "
                         f"class: model=custom builds only nn.Module subclasses")
    return obj


def custom_model(in_shape: Sequence[int], num_classes: int, _target_: str,
                 kwargs: dict[str, Any]) -> nn.Module:
    """Any nn.Module class, built by Hydra's instantiate as
    `target(in_shape=..., num_classes=..., **kwargs)` once the class is checked; kwargs are plain
    values (a nested _target_ is refused when the config is validated, and never instantiated)."""
    from hydra.utils import instantiate

    return instantiate({"_target_": model_class(_target_), **kwargs}, in_shape=list(in_shape),
                       num_classes=num_classes, _recursive_=False, _convert_="all")


@dataclass
class CustomModelConfig(ModelConfig):
    name: str = "custom"
    _target_: str = ""  # a class path, e.g. my_package.MyNet(in_shape, num_classes, **kwargs)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(isinstance(self._target_, str) and "." in self._target_,
              f"model=custom needs model._target_=<a class path like my_package.MyNet>, "
              f"got {self._target_!r}")
        model_class(self._target_)


MODELS.add(ModelEntry("custom", custom_model, CustomModelConfig, "custom",
                      lambda s: s._target_.rpartition(".")[2]))
