"""Activity rules, a registry: when a unit counts as active. One function (a layer's per-unit
statistics and the setting in, a bool per unit out) and one `RULES.add(...)` each, with a YAML in
conf/threshold/ that names it (`threshold.rule`).

- `mean` (the paper's): the unit's mean output over the probe set exceeds θ;
- `fraction`: the unit exceeds θ on more than `min_fraction` of the probe samples;
- `dormant`: the τ-dormant score of Sokar et al. 2023, the unit's mean |output| over the mean
  of that over its layer's live units, exceeds τ (`theta` holds τ). Scale-free: a layer whose
  outputs are all multiplied by c keeps its active units, where a fixed θ does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from emergence_lab.measure.stats import LayerStats
from emergence_lab.registry import Registry


@dataclass(frozen=True)
class RuleEntry:
    """An activity rule: active(stats, theta, min_fraction) -> bool per unit; `symbol` names
    its parameter in tables (θ, τ); `reads_fraction`: whether min_fraction is one of its
    settings; `grid_key`: the tag of its θ grid's metric keys (measure.keys.THETA_KEYS), None
    for a rule whose grid is not logged."""

    name: str
    active: Callable[[LayerStats, float, float], torch.Tensor]
    label: str
    symbol: str = "θ"
    reads_fraction: bool = False
    grid_key: str | None = None


RULES: Registry[RuleEntry] = Registry("threshold.rule")


def _mean(stats: LayerStats, theta: float, min_fraction: float) -> torch.Tensor:
    return stats.mean > theta


def _fraction(stats: LayerStats, theta: float, min_fraction: float) -> torch.Tensor:
    return stats.order_statistic(min_fraction) > theta


def _dormant(stats: LayerStats, theta: float, min_fraction: float) -> torch.Tensor:
    live = stats.mean_abs[stats.alive]
    level = live.mean() if live.numel() else torch.zeros(())
    if level <= 0:
        return torch.zeros_like(stats.alive)
    return stats.mean_abs / level > theta


RULES.add(RuleEntry("mean", _mean, "mean > θ", grid_key=""))
RULES.add(RuleEntry("fraction", _fraction, "share > θ", reads_fraction=True, grid_key="_fraction"))
RULES.add(RuleEntry("dormant", _dormant, "dormant score > τ", symbol="τ"))
