"""Filter-normalized random slices of the loss (Li et al. 2018, "Visualizing the Loss Landscape
of Neural Nets"): each direction's rows (a neuron's incoming weights, a filter) scaled to the
norm of the weights' row, biases and pruned coordinates left at 0, so that a function-preserving
rescaling of a ReLU network moves nothing. Along `slices` 1-D slices: the number of interior
local minima and the roughness (the mean squared second difference of the loss along the slice,
in loss units); `full` adds one 2-D plane for the contour figure."""

from __future__ import annotations

import numpy as np
import torch

from emergence_lab.measure import keys
from emergence_lab.measure.landscape.base import (
    MEASURES,
    LandscapeMeasure,
    LandscapeSettings,
    Problem,
    generator,
)


def direction(pb: Problem, gen: torch.Generator) -> list[torch.Tensor]:
    """A filter-normalized random direction: per row of each weight (dim >= 2), Gaussian noise
    scaled to that row's norm (on its surviving coordinates); 0 for biases and 1-D parameters
    (Li et al.'s "biasbn" choice) and on pruned coordinates."""
    out = []
    for p, m in zip(pb.params, pb.masks, strict=True):
        if p.dim() < 2:
            out.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
        w = p.detach()
        if m is not None:
            d, w = d * m, w * m
        rows = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(1e-12)
        scale = w.reshape(w.shape[0], -1).norm(dim=1) / rows
        out.append(d * scale.reshape(-1, *[1] * (d.dim() - 1)))
    return out


def slice_losses(pb: Problem, d: list[torch.Tensor], alphas: np.ndarray) -> np.ndarray:
    base = [p.detach() for p in pb.params]
    return np.array([pb.loss_at([b + float(a) * v for b, v in zip(base, d, strict=True)])
                     for a in alphas])


def local_minima(losses: np.ndarray) -> int:
    """Interior points below both neighbours."""
    mid = losses[1:-1]
    return int(np.sum((mid < losses[:-2]) & (mid < losses[2:])))


def roughness(losses: np.ndarray) -> float:
    """The mean squared second difference along the slice."""
    return float(np.mean(np.diff(losses, 2) ** 2))


def slices(pb: Problem, settings: LandscapeSettings) -> dict[str, object]:
    alphas = np.linspace(-settings.span, settings.span, settings.points)
    gen = generator(settings, pb.params[0].device, 1)
    curves = [slice_losses(pb, direction(pb, gen), alphas) for _ in range(settings.slices)]
    return {keys.SLICE_MINIMA: float(np.mean([local_minima(c) for c in curves])),
            keys.ROUGHNESS: float(np.mean([roughness(c) for c in curves]))}


def plane(pb: Problem, settings: LandscapeSettings) -> dict[str, object]:
    """The loss on a 2-D grid over two filter-normalized directions ([-span, span]^2)."""
    gen = generator(settings, pb.params[0].device, 2)
    d1, d2 = direction(pb, gen), direction(pb, gen)
    ticks = np.linspace(-settings.span, settings.span, settings.plane_points)
    base = [p.detach() for p in pb.params]
    grid = np.array([[pb.loss_at([b + float(a) * u + float(c) * v for b, u, v in
                                  zip(base, d1, d2, strict=True)]) for a in ticks] for c in ticks])
    return {"plane": {"ticks": ticks.tolist(), "loss": grid.tolist()}}


MEASURES.add(LandscapeMeasure(
    "slices", slices, (keys.SLICE_MINIMA, keys.ROUGHNESS), "filter-normalized 1-D slices: "
    "interior local minima per slice and the roughness (mean squared second difference of "
    "the loss)"))
MEASURES.add(LandscapeMeasure(
    "plane", plane, (), "one filter-normalized 2-D plane of the loss (the contour figure)",
    plane=True))
