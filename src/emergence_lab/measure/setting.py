"""An analysis setting: how E is read from a measurement (activity rule, its θ or τ, route
counting, counted layers). A setting is never part of a run's identity: every run stores what
E needs under any setting (see `record.py`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from emergence_lab.measure.counting import COUNTINGS
from emergence_lab.measure.graph import UNIT_LAYER_KINDS
from emergence_lab.measure.rules import RULES
from emergence_lab.measure.stats import FRACTIONS


@dataclass(unsafe_hash=True)
class Setting:
    """The one schema of how E is read: the config group `threshold` extends it (with its θ
    grid), so its fields, defaults and checks are written here once. A value: hashed, compared
    and never changed after it is made (`layers` becomes a tuple)."""

    rule: str = "mean"  # measure.rules.RULES
    theta: float = 0.05  # θ (τ for the dormant rule): a unit is active when its statistic exceeds it
    counting: str = "units"  # measure.counting.COUNTINGS: units (the paper's), edges
    min_fraction: float = 0.5  # rule=fraction: active on more than this share of probe samples
    layers: tuple[str, ...] = ("hidden",)  # measure.graph.UNIT_LAYER_KINDS: input, hidden, output

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)
        RULES[self.rule]  # noqa: B018 - an unknown name raises with the choices
        COUNTINGS[self.counting]  # noqa: B018
        symbol = RULES[self.rule].symbol
        if not (isinstance(self.theta, int | float) and math.isfinite(self.theta)
                and self.theta >= 0):
            raise ValueError(f"threshold.theta ({symbol} of rule {self.rule}) must be a finite "
                             f"number >= 0, got {self.theta}")
        if not any(math.isclose(self.min_fraction, f) for f in FRACTIONS):
            raise ValueError(f"threshold.min_fraction must be one of {list(FRACTIONS)} (the "
                             f"shares stored per unit), got {self.min_fraction}")
        unknown = sorted(set(self.layers) - set(UNIT_LAYER_KINDS))
        if unknown or not self.layers:
            raise ValueError(f"threshold.layers entries must be among {list(UNIT_LAYER_KINDS)}, "
                             f"got {list(self.layers)}")

    def setting(self) -> Setting:
        """The setting alone (a subclass's further fields dropped)."""
        return Setting(self.rule, self.theta, self.counting, self.min_fraction, self.layers)

    def normalized(self) -> Setting:
        """The same setting with the fields its rule ignores at their defaults."""
        frac = self.min_fraction if RULES[self.rule].reads_fraction else Setting.min_fraction
        order = tuple(k for k in UNIT_LAYER_KINDS if k in self.layers)
        return Setting(self.rule, float(self.theta), self.counting, frac, order)

    def with_counting(self, counting: str) -> Setting:
        return Setting(self.rule, self.theta, counting, self.min_fraction, self.layers)

    def describe(self) -> str:
        """e.g. 'mean θ=0.05, units' or 'fraction(0.25) θ=0.1, edges, hidden+output'."""
        s = self.normalized()
        rule = f"{s.rule}({s.min_fraction:g})" if s.min_fraction != 0.5 else s.rule
        layers = "" if s.layers == ("hidden",) else ", " + "+".join(s.layers)
        return f"{rule} {RULES[s.rule].symbol}={s.theta:g}, {s.counting}{layers}"


DEFAULT = Setting()
