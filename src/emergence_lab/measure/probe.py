"""Emergence of any traced network on a probe set: measured once, read under any setting.

    from emergence_lab import measure_emergence
    m = measure_emergence(model, probe, theta=0.05, rule="mean", counting="units")
    m.E, m.relative, m.layers   # int, float, {name: (units, active units)}

`measure(model, probe)` runs the probe set once and returns a `Measurement`: the unit graph's
routes, which units live, which connections survive, and per-unit statistics of every unit
layer (input, hidden, output). `Measurement.at(setting)` is E under any activity rule, θ,
counting and counted layers, exactly, with neither the network nor the data; runs store one
per epoch (`record.py`).

Normalization layers that have never seen data (batch norm with its default running
statistics, e.g. at initialization) are measured on a copy whose statistics are recalibrated
on the probe set; the model's own buffers are untouched. Trained networks are measured in eval
mode.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn

from emergence_lab.measure import keys
from emergence_lab.measure.counting import COUNTINGS, connections_of
from emergence_lab.measure.formula import max_emergence, relative_emergence
from emergence_lab.measure.graph import UNIT_LAYER_KINDS, UnitGraph, cached_unit_graph
from emergence_lab.measure.ops import Op
from emergence_lab.measure.rules import RULES
from emergence_lab.measure.setting import Setting
from emergence_lab.measure.stats import LayerStats, layer_stats

FORMAT = 1  # of a stored measurement (connections as packed bits)


@dataclass(frozen=True)
class Emergence:
    """E (routes from inactive to active units), E per surviving parameter, and
    (units, active units) of each counted layer in forward order."""

    E: int
    relative: float
    layers: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class Measurement:
    """What E needs under any setting, from one pass over the probe set."""

    ops: list[Op]
    layers: dict[str, int]  # every unit layer: name -> op index, in forward order
    kinds: dict[str, str]  # name -> input, hidden or output
    alive: list[torch.Tensor]  # per op, its live channels
    connections: dict[int, torch.Tensor]  # per dense op with zero weights: surviving pairs
    stats: dict[str, LayerStats]
    n_params: int

    def at(self, setting: Setting | None = None) -> Emergence:
        """E under a setting (the paper's by default)."""
        s = setting or Setting()
        rule, counting = RULES[s.rule], COUNTINGS[s.counting]
        chosen = {n: i for n, i in self.layers.items() if self.kinds[n] in s.layers}
        if len(chosen) < 2:
            raise ValueError(f"emergence needs at least 2 counted layers: threshold.layers="
                             f"{list(s.layers)} counts {len(chosen)} of this network")
        active = {n: rule.active(self.stats[n], s.theta, s.min_fraction) & self.stats[n].alive
                  for n in chosen}
        e = counting.count(self.ops, chosen, active, self.alive, self.connections)
        layers = {n: (int(self.stats[n].alive.sum()), int(active[n].sum())) for n in chosen}
        return Emergence(e, relative_emergence(e, self.n_params), layers)

    def to_state(self) -> dict[str, object]:
        """Plain tensors, lists and numbers (loads with torch.load(weights_only=True))."""
        return {"format": FORMAT,
                "ops": [[o.name, o.kind, list(o.inputs), o.channels, o.module, o.groups]
                        for o in self.ops],
                "layers": dict(self.layers), "kinds": dict(self.kinds),
                "alive": [a.clone() for a in self.alive],
                "connections": {str(i): _pack(c) for i, c in self.connections.items()},
                "stats": {n: s.to_state() for n, s in self.stats.items()},
                "n_params": self.n_params}

    @classmethod
    def from_state(cls, d: dict) -> Measurement:
        if d.get("format") != FORMAT:
            raise ValueError(f"a stored measurement of format {d.get('format')!r}; this code "
                             f"reads format {FORMAT}")
        ops = [Op(n, k, tuple(i), c, m, g) for n, k, i, c, m, g in d["ops"]]
        return cls(ops, dict(d["layers"]), dict(d["kinds"]), list(d["alive"]),
                   {int(i): _unpack(c) for i, c in d["connections"].items()},
                   {n: LayerStats.from_state(s) for n, s in d["stats"].items()},
                   int(d["n_params"]))


def _pack(c: torch.Tensor) -> dict[str, object]:
    """A bool matrix as bits (8 to a byte: a pruned MLP's 784 x 512 connections in 49 KiB)."""
    return {"shape": list(c.shape), "bits": torch.from_numpy(np.packbits(c.numpy().ravel()))}


def _unpack(d: dict[str, object]) -> torch.Tensor:
    shape = [int(n) for n in d["shape"]]
    flat = np.unpackbits(d["bits"].numpy(), count=int(np.prod(shape)))
    return torch.from_numpy(flat.astype(bool)).reshape(shape)


def surviving_parameters(model: nn.Module) -> int:
    """Parameters not pruned: weights whose mask (a `<name>_mask` buffer) is 1, all of them
    where there is none, plus every other parameter."""
    count = 0
    for m in model.modules():
        for pname, p in m.named_parameters(recurse=False):
            mask = getattr(m, pname.removesuffix("_orig") + "_mask", None)
            count += p.numel() if mask is None else int(mask.sum().item())
    return count


def needs_recalibration(model: nn.Module) -> bool:
    """Whether some batch norm has never seen data (its running statistics are the defaults)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
               and m.num_batches_tracked is not None and int(m.num_batches_tracked) == 0
               for m in model.modules())


@torch.no_grad()
def recalibrated(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> nn.Module:
    """A copy whose batch norms hold the probe set's statistics (a cumulative average over
    its batches); the model is not touched."""
    net = copy.deepcopy(model)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
            m.momentum = None  # the cumulative average: every probe batch weighs the same
    net.train()
    for start in range(0, x.shape[0], batch_size):
        net(x[start:start + batch_size])
    return net.eval()


@torch.no_grad()
def collect(module: nn.Module, names: Sequence[str], x: torch.Tensor, batch_size: int = 1024
            ) -> dict[str, torch.Tensor]:
    """Per-sample unit activations, (samples, units) per unit layer, from a probe module."""
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    was_training = module.training
    module.eval()
    try:
        for start in range(0, x.shape[0], batch_size):
            for n, t in zip(names, module(x[start:start + batch_size]), strict=True):
                chunks[n].append(t)
    finally:
        module.train(was_training)
    return {n: torch.cat(parts) for n, parts in chunks.items()}


def kinds_of(graph: UnitGraph) -> dict[str, str]:
    """Each unit layer's kind: input, output, or hidden (every activation call)."""
    return {n: n if n in ("input", "output") else "hidden" for n in graph.layers}


def _input_stats(graph: UnitGraph, x: torch.Tensor, acts: torch.Tensor, alive: torch.Tensor
                 ) -> LayerStats:
    """The input layer's statistics depend on the probe set alone: computed once per probe
    tensor (a run's every epoch reads the same one), kept on the graph."""
    cache = graph.__dict__.setdefault("_input_stats", {})
    key = (x.data_ptr(), tuple(x.shape), x.device.type)
    if key not in cache:
        cache.clear()
        cache[key] = layer_stats(acts, alive)
    return cache[key]


def measure(model: nn.Module, x: torch.Tensor, batch_size: int = 1024,
            graph: UnitGraph | None = None) -> tuple[Measurement, dict[str, torch.Tensor]]:
    """One pass over the probe inputs `x` (on the model's device): the measurement, and the
    activations of the live units of each unit layer (what the sparsity baselines read)."""
    graph = graph or cached_unit_graph(model, x[:1], UNIT_LAYER_KINDS)
    module: nn.Module = graph.module
    if needs_recalibration(model):
        module = fx.GraphModule(recalibrated(model, x, batch_size), graph.module.graph)
    acts = collect(module, list(graph.layers), x, batch_size)
    alive = graph.alive(model)
    stats = {n: _input_stats(graph, x, acts[n], alive[i]) if n == "input"
             else layer_stats(acts[n], alive[i]) for n, i in graph.layers.items()}
    live = {n: a[:, alive[graph.layers[n]].to(a.device)] for n, a in acts.items()}
    m = Measurement(graph.ops, dict(graph.layers), kinds_of(graph), alive,
                    connections_of(model, graph.ops), stats, surviving_parameters(model))
    return m, live


def measure_emergence(model: nn.Module, probe_x: torch.Tensor, theta: float = 0.05,
                      rule: str = "mean", counting: str = "units",
                      layers: Sequence[str] = ("hidden",), min_fraction: float = 0.5,
                      batch_size: int = 1024) -> Emergence:
    """Emergence of `model` on the inputs `probe_x` (a batch, on the model's device).

    rule: an activity rule of `rules.RULES` (mean, fraction, dormant; theta is τ for dormant);
    counting: a route counting of `counting.COUNTINGS` (units: the paper's formula; edges:
    surviving connections only); layers: the counted unit layers, any of input, hidden (every
    activation call), output (the softmax)."""
    setting = Setting(rule, theta, counting, min_fraction, tuple(layers))
    return measure(model, probe_x, batch_size)[0].at(setting)


def counts_metrics(m: Emergence) -> dict[str, float]:
    """The logged emergence metrics: E, relative E, the largest E the paper's (chain) formula
    allows over these layer sizes, and the active fraction of each layer."""
    out = {keys.E: float(m.E), keys.RELATIVE: m.relative}
    if len(m.layers) >= 2:
        out[keys.E_MAX] = float(max_emergence([n for n, _ in m.layers.values()]))
    for name, (n, a) in m.layers.items():
        out[keys.active_frac(name)] = a / n if n else 0.0
    return out
