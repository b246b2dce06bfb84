"""The loss landscape around a network's weights, measured as emergence is: pure functions of a
model, a batch and its masks. `measure_landscape(model, x, y)` gives the top Hessian eigenvalue,
the trace and the surviving parameters (what runs log as landscape/*), and with the slices the
local minima per slice and the roughness. Each measure is one module registering itself in
MEASURES (curvature, slices, plane)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from emergence_lab.measure import keys
from emergence_lab.measure.landscape.base import MEASURES, LandscapeSettings, Loss, problem
from emergence_lab.registry import import_submodules

import_submodules(__name__)


@dataclass
class Landscape:
    lambda_max: float = float("nan")
    trace: float = float("nan")
    n_params: int = 0
    trace_per_param: float = float("nan")
    slice_minima: float = float("nan")
    roughness: float = float("nan")
    plane: dict | None = None  # {"ticks": [...], "loss": [[...]]} with the plane measure
    metrics: dict[str, float] = field(default_factory=dict)  # what a run logs, by metric key


FIELDS = {keys.LAMBDA_MAX: "lambda_max", keys.TRACE: "trace",
          keys.TRACE_PER_PARAM: "trace_per_param", keys.SLICE_MINIMA: "slice_minima",
          keys.ROUGHNESS: "roughness"}


def measure_landscape(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      measures: Sequence[str] = ("curvature",),
                      settings: LandscapeSettings | None = None,
                      loss: Loss | None = None) -> Landscape:
    """The landscape of the mean `loss` (a module with reduction "mean"; cross-entropy by
    default) of `model` on (x, y) at its current weights, on the surviving weights of a pruned
    network; the model is put in eval mode and left so."""
    settings = settings or LandscapeSettings()
    model.eval()
    pb = problem(model, x, y, loss)
    out = Landscape(n_params=pb.n_params)
    for name in measures:
        for key, value in MEASURES[name].measure(pb, settings).items():
            if key == "plane":
                out.plane = value
            else:
                setattr(out, FIELDS[key], value)
                out.metrics[key] = float(value)
    return out


__all__ = ["MEASURES", "Landscape", "LandscapeSettings", "measure_landscape"]
