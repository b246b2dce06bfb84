"""Route counting, a registry: which routes between units E counts. One function and one
`COUNTINGS.add(...)` each; `threshold.counting` names one.

- `units`: the paper's formula (every figure of the paper means it): consecutive unit layers
  are fully connected (within a convolution's groups), whatever pruning zeroed. On a chain this
  is sum_{i<j} (n_i - a_i) a_j prod n_k.
- `edges`: only routes along surviving connections. Two units of consecutive layers are
  connected when some weight between them is nonzero (for a convolution: any element of the
  kernel slice; for a Linear reading flattened conv maps: any position of the channel). On an
  unpruned network (no weight exactly zero) it equals `units`; after pruning it is <= `units`.

Both count exactly, in Python integers, on any traced graph (residual sums, concatenation,
grouped convolutions): P(v) = sum over routes w -> v of (P(w) + [w inactive]), E = sum over
active v of P(v).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emergence_lab.measure.ops import Op
from emergence_lab.registry import Registry

Connections = Mapping[int, torch.Tensor]  # dense op index -> (out, in per group) bool


@dataclass(frozen=True)
class CountingEntry:
    """A route counting: which connections `routes` follows (None: every pair of units of
    consecutive layers, within groups; else the surviving ones)."""

    name: str
    label: str
    uses_connections: bool

    def count(self, ops: Sequence[Op], layers: Mapping[str, int],
              active: Mapping[str, torch.Tensor], alive: Sequence[torch.Tensor],
              connections: Connections) -> int:
        return routes(ops, layers, active, alive, connections if self.uses_connections else None)


COUNTINGS: Registry[CountingEntry] = Registry("threshold.counting")


def routes(ops: Sequence[Op], layers: Mapping[str, int], active: Mapping[str, torch.Tensor],
           alive: Sequence[torch.Tensor], connections: Connections | None = None) -> int:
    """E on a unit graph: routes from an inactive unit to an active unit of a later layer.

    layers: the counted unit layers (name -> op index); unit ops not in it pass their routes
    through, input ops not in it start none. active: per counted layer, a bool per unit.
    alive: per op, its live channels. connections: per dense op, which (out, in) channel pairs
    a surviving weight joins; a dense op without an entry is fully connected (within groups)."""
    layer_of = {i: name for name, i in layers.items()}
    conns = connections or {}
    q: list[list[int]] = []  # per op and channel: routes from inactive units into it
    total = 0
    for i, op in enumerate(ops):
        live = alive[i].tolist()
        if op.kind == "input" and i not in layer_of:
            out = [0] * op.channels
        elif op.kind == "dense":
            out = _dense(q[op.inputs[0]], op, live, conns.get(i))
        elif op.kind == "sum":
            out = [0] * op.channels
            for j in op.inputs:
                src = q[j]
                if len(src) == op.channels:
                    out = [a + b for a, b in zip(out, src, strict=True)]
                else:  # broadcast of a one-channel input
                    out = [a + src[0] for a in out]
        elif op.kind == "cat":
            out = [v for j in op.inputs for v in q[j]]
        else:
            out = list(q[op.inputs[0]]) if op.inputs else [0] * op.channels
        if i in layer_of:  # a counted unit layer: P(v) = out[v]
            act = active[layer_of[i]].tolist()
            if len(act) != op.channels:
                raise ValueError(f"unit layer {layer_of[i]}: {len(act)} activity flags for "
                                 f"{op.channels} units")
            total += sum(p for p, a, v in zip(out, act, live, strict=True) if a and v)
            out = [p + (not a) if v else 0 for p, a, v in zip(out, act, live, strict=True)]
        q.append(out)
    return total


def _dense(src: list[int], op: Op, live: list[bool], conn: torch.Tensor | None) -> list[int]:
    per_in, per_out = len(src) // op.groups, op.channels // op.groups
    out: list[int] = []
    for g in range(op.groups):
        block = src[g * per_in:(g + 1) * per_in]
        if conn is None:
            s = sum(block)
            sums = [s] * per_out
        else:
            sums = _masked_sums(conn[g * per_out:(g + 1) * per_out], block)
        out += [s if live[g * per_out + c] else 0 for c, s in enumerate(sums)]
    return out


def _masked_sums(conn: torch.Tensor, values: list[int]) -> list[int]:
    """conn (out, in) bool times the integer vector `values`, exactly: in int64 when no sum
    can pass 2^63, else in Python integers."""
    c = conn.cpu().numpy()
    if values and max(values) * len(values) < 2 ** 62:
        return (c.astype(np.int64) @ np.asarray(values, dtype=np.int64)).tolist()
    v = np.asarray(values, dtype=object)
    return [int(v[row].sum()) if row.any() else 0 for row in c]


COUNTINGS.add(CountingEntry("units", "units (the paper's formula)", False))
COUNTINGS.add(CountingEntry("edges", "edges (surviving connections)", True))


def connections_of(model: torch.nn.Module, ops: Sequence[Op]) -> dict[int, torch.Tensor]:
    """Per dense op whose weight has a zero: which (out, in per group) channel pairs some
    nonzero weight joins. Ops with every weight nonzero are left out (fully connected)."""
    modules = dict(model.named_modules())
    out: dict[int, torch.Tensor] = {}
    for i, op in enumerate(ops):
        if op.kind != "dense":
            continue
        w = modules[op.module].weight.detach()
        if bool((w != 0).all()):
            continue
        in_channels = ops[op.inputs[0]].channels // op.groups
        out[i] = (w != 0).reshape(w.shape[0], in_channels, -1).any(dim=2).cpu()
    return out
