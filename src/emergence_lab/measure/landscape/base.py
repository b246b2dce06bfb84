"""What a landscape measurement works on: the trainable parameters, the surviving coordinates of
a pruned network (its `<param>_mask` buffers), the training loss on a fixed batch as a function
of the parameters, and the registry of landscape measures (one module each)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from torch import nn
from torch.func import functional_call

from emergence_lab.registry import Registry, check

Loss = nn.Module  # (output, targets) -> the loss, with reduction "mean" (curvlinops reads it)


def _at_least(low: float, default: float):
    return field(default=default, metadata={"min": low})


@dataclass
class LandscapeSettings:
    """probes: Hutch++ matrix-vector products for the trace; lanczos: the Krylov space Lanczos
    uses for the top eigenvalue; slices: filter-normalized directions, `points` losses each over
    [-span, span]; plane_points: the side of the 2-D grid; seed: the random directions and
    vectors (drawn apart from training's random state). Each bounded field says its least
    value (metadata "min"), checked here; the run's `landscape` config group extends it."""

    probes: int = _at_least(1, 30)
    lanczos: int = _at_least(1, 20)
    slices: int = _at_least(1, 2)
    points: int = _at_least(3, 41)
    span: float = _at_least(1e-9, 1.0)
    plane_points: int = _at_least(1, 21)
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            low = f.metadata.get("min")
            if low is not None:
                check(getattr(self, f.name) >= low,
                      f"landscape.{f.name} must be >= {low:g}, got {getattr(self, f.name)}")


@dataclass
class Problem:
    """The network, its parameters by name, each one's mask (None: all of it survives), the
    batch and the loss. The model is read, never changed."""

    model: nn.Module
    names: list[str]
    params: list[nn.Parameter]
    masks: list[torch.Tensor | None]
    x: torch.Tensor
    y: torch.Tensor
    loss: Loss = field(default_factory=nn.CrossEntropyLoss)

    @property
    def n_params(self) -> int:
        """Surviving parameters (a mask's ones, every coordinate where there is none)."""
        return sum(p.numel() if m is None else int(m.sum().item())
                   for p, m in zip(self.params, self.masks, strict=True))

    def surviving_index(self) -> list[int]:
        """The flat indices (in the order of `params`) of the surviving coordinates."""
        out, offset = [], 0
        for p, m in zip(self.params, self.masks, strict=True):
            keep = torch.ones(p.numel(), dtype=torch.bool) if m is None else m.reshape(-1).cpu() > 0
            out.append(torch.nonzero(keep).reshape(-1) + offset)
            offset += p.numel()
        return torch.cat(out).tolist()

    def loss_at(self, values: list[torch.Tensor]) -> float:
        """The loss with the parameters set to `values` (the model itself is not changed)."""
        with torch.no_grad():
            out = functional_call(self.model, dict(zip(self.names, values, strict=True)), (self.x,))
            return float(self.loss(out, self.y))


def problem(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss | None = None
            ) -> Problem:
    """The landscape problem of a network in eval mode (normalization layers use their running
    statistics: the loss is a function of the weights alone)."""
    names, params, masks = [], [], []
    for mod_name, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if p.requires_grad:
                names.append(f"{mod_name}.{pname}".lstrip("."))
                params.append(p)
                masks.append(getattr(m, f"{pname}_mask", None))
    return Problem(model, names, params, masks, x, y, loss or nn.CrossEntropyLoss())


@dataclass(frozen=True)
class LandscapeMeasure:
    """measure(problem, settings) -> {metric key: value} (and `plane`: the 2-D grid, not a
    metric); keys: the metric keys it logs (measure.keys); label: what it reports; plane:
    whether it gives the 2-D grid (kept as an artifact per epoch)."""

    name: str
    measure: Callable[[Problem, LandscapeSettings], dict[str, object]]
    keys: tuple[str, ...]
    label: str
    plane: bool = False


MEASURES: Registry[LandscapeMeasure] = Registry("landscape.measures")


def generator(settings: LandscapeSettings, device: torch.device, offset: int = 0
              ) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(settings.seed * 1_000_003 + offset)
