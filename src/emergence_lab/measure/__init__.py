"""measure: emergence as a measurement of a network, apart from training.

Owns the paper's formula (`formula`), the traced unit graph (`graph`), per-unit probe
statistics (`stats`), activity rules (`rules`, a registry), route counting (`counting`, a
registry), analysis settings (`setting`), a measurement and `measure_emergence` (`probe`), the
stored form of a run's measurements (`record`), the sparsity baselines (`baselines`) and the
metric-key schema (`keys`).

May import: torch, numpy and `emergence_lab.registry`; never the run, store, prune or report
stages (it reads masks and weights, never strategies).
"""

from __future__ import annotations

from emergence_lab.measure.probe import Emergence, Measurement, measure, measure_emergence
from emergence_lab.measure.setting import Setting

__all__ = ["Emergence", "Measurement", "Setting", "measure", "measure_emergence"]
