"""Emergence of any traced network on a probe set: the function a training loop calls.

    from emergence_lab import measure_emergence
    m = measure_emergence(model, probe, theta=0.05)
    m.E, m.relative, m.layers   # int, float, {name: (units, active units)}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from emergence_lab.emergence import relative_emergence, unit_activity
from emergence_lab.pruning import surviving_parameters
from emergence_lab.unitgraph import UnitGraph, collect_activations, unit_graph


@dataclass(frozen=True)
class Emergence:
    """E (routes from inactive to active units), E per surviving parameter, and
    (units, active units) of each counted layer in forward order."""

    E: int
    relative: float
    layers: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class Probe:
    """A network's unit activations on a probe set, read once and counted at any threshold."""

    graph: UnitGraph
    activations: dict[str, torch.Tensor]  # (samples, alive units) per counted layer
    alive: list[torch.Tensor]  # per op of the graph
    n_params: int

    def at(self, theta: float, mode: str = "mean", min_fraction: float = 0.5) -> Emergence:
        active = {}
        for name, i in self.graph.layers.items():
            keep = self.alive[i]
            flags = torch.zeros(keep.numel(), dtype=torch.bool)
            flags[keep] = unit_activity(self.activations[name], theta, mode, min_fraction).cpu()
            active[name] = flags
        e = self.graph.count(active, self.alive)
        layers = {name: (int(self.alive[i].sum()), int(active[name].sum()))
                  for name, i in self.graph.layers.items()}
        return Emergence(e, relative_emergence(e, self.n_params), layers)


def probe(model: nn.Module, x: torch.Tensor, layers: Sequence[str] = ("hidden",),
          batch_size: int = 1024, graph: UnitGraph | None = None) -> Probe:
    """Run the probe set once: unit activations of the alive units of each counted layer."""
    graph = graph or unit_graph(model, x[:1], layers)
    acts = collect_activations(model, graph, x, batch_size)
    alive = graph.alive(model)
    acts = {name: a[:, alive[graph.layers[name]].to(a.device)] for name, a in acts.items()}
    return Probe(graph, acts, alive, surviving_parameters(model))


def measure_emergence(model: nn.Module, probe_x: torch.Tensor, theta: float = 0.05,
                      layers: Sequence[str] = ("hidden",), mode: str = "mean",
                      min_fraction: float = 0.5, batch_size: int = 1024) -> Emergence:
    """Emergence of `model` on the inputs `probe_x` (a batch, on the model's device).

    layers: the counted unit layers, any of input, hidden (every activation call), output
    (the softmax). mode "mean": a unit is active when its mean output over the probe set
    exceeds theta; "fraction": when it exceeds theta on more than min_fraction of the samples.
    """
    return probe(model, probe_x, layers, batch_size).at(theta, mode, min_fraction)


def counts_metrics(m: Emergence) -> dict[str, float]:
    """The logged emergence metrics: E, relative E and the active fraction of each layer."""
    out = {"emergence/E": float(m.E), "emergence/relative": m.relative}
    for name, (n, a) in m.layers.items():
        out[f"emergence/active_frac/{name}"] = a / n if n else 0.0
    return out

