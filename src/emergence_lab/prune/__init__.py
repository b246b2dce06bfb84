"""Pruning: the settings and registries (`base`), schedules and resets (`schedules`), how masks are
applied (`masks`), and the strategies, one module each (`strategies/`).

May import `measure`, `models` and `registry`; the run pipeline applies it.
"""

from emergence_lab.prune import schedules, strategies  # noqa: F401 - register the options
