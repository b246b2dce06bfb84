"""Per-unit statistics of the probe set: what every activity rule reads, compact enough to
store at every epoch (a few numbers per unit), so that E can be recomputed later under any
rule, threshold and counting without the network or the data.

For a unit with probe outputs a_1..a_S (conv maps averaged over positions):
- `mean`: (1/S) sum a_s (the paper's rule compares it with θ);
- `mean_abs`: (1/S) sum |a_s| (the τ-dormant score of Sokar et al. 2023 divides it by its
  layer's mean);
- `kth[f]`: the k-th largest a_s with k = floor(f S) + 1, for each f of FRACTIONS. "More than
  a share f of the samples exceed θ" holds exactly when this order statistic exceeds θ, so the
  fraction rule is exact at any θ for the stored shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9)  # the shares of the fraction rule stored per unit


@dataclass(frozen=True)
class LayerStats:
    """One counted layer's per-unit statistics (every unit, removed ones included; `alive`
    says which the network still has)."""

    mean: torch.Tensor  # (units,)
    mean_abs: torch.Tensor  # (units,)
    kth: torch.Tensor  # (len(fractions), units)
    alive: torch.Tensor  # (units,) bool
    samples: int
    fractions: tuple[float, ...] = FRACTIONS

    def order_statistic(self, fraction: float) -> torch.Tensor:
        """Per unit, the value that more than `fraction` of the samples must exceed."""
        for i, f in enumerate(self.fractions):
            if math.isclose(f, fraction):
                return self.kth[i]
        raise ValueError(f"threshold.min_fraction={fraction} is not stored; the stored shares "
                         f"are {list(self.fractions)}")

    def to_state(self) -> dict[str, object]:
        return {"mean": self.mean, "mean_abs": self.mean_abs, "kth": self.kth,
                "alive": self.alive, "samples": self.samples, "fractions": list(self.fractions)}

    @classmethod
    def from_state(cls, d: dict[str, object]) -> LayerStats:
        return cls(d["mean"], d["mean_abs"], d["kth"], d["alive"], int(d["samples"]),
                   tuple(float(f) for f in d["fractions"]))


def layer_stats(acts: torch.Tensor, alive: torch.Tensor,
                fractions: tuple[float, ...] = FRACTIONS) -> LayerStats:
    """The statistics of (samples, units) activations, on the CPU in float32."""
    if acts.dim() != 2:
        raise ValueError(f"activations must be (samples, units), got shape {tuple(acts.shape)}")
    s = acts.shape[0]
    acts = acts.detach().float()
    # sorted along each unit's samples, contiguous (about 1.6x faster than sorting dim 0)
    ascending = acts.t().contiguous().sort(dim=1).values
    kth = torch.full((len(fractions), acts.shape[1]), -math.inf)
    for i, f in enumerate(fractions):
        k = math.floor(f * s) + 1  # more than f * s samples must exceed θ
        if k <= s:  # else no θ is exceeded by enough samples
            kth[i] = ascending[:, s - k].cpu()
    return LayerStats(acts.mean(dim=0).cpu(), acts.abs().mean(dim=0).cpu(), kth.cpu(),
                      alive.cpu().bool(), s, tuple(fractions))
