"""Sparsity baselines: what E is compared against (is E just sparsity?). Pure functions of the
probe set's unit activations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

DORMANT_TAUS = (0.0, 0.025, 0.1)


def sparsity_baselines(activations: Mapping[str, torch.Tensor],
                       taus: Sequence[float] = DORMANT_TAUS) -> dict[str, float]:
    """What E is compared against (is E just sparsity?), over the units of every counted layer:

    - `sparsity/dead_frac`: units whose output is <= 0 on every probe sample;
    - `sparsity/zero_frac`: the share of (sample, unit) outputs that are <= 0 (activation
      sparsity; conv maps are averaged over positions first, as for E);
    - `sparsity/dormant_frac/<tau>`: tau-dormant units of Sokar et al. 2023 ("The dormant neuron
      phenomenon in deep RL"): a unit's mean |output| divided by the mean of that over its layer
      is <= tau (tau = 0: the unit never fires).
    """
    units = dead = zero = cells = 0
    dormant = dict.fromkeys(taus, 0)
    for name, acts in activations.items():
        if acts.dim() != 2:
            raise ValueError(f"{name}: activations must be (samples, units), "
                             f"got shape {tuple(acts.shape)}")
        if acts.numel() == 0:
            continue
        off = acts <= 0
        units += acts.shape[1]
        dead += int(off.all(dim=0).sum().item())
        zero += int(off.sum().item())
        cells += acts.numel()
        level = acts.abs().mean(dim=0)
        score = level / level.mean() if level.mean() > 0 else torch.zeros_like(level)
        for tau in taus:
            dormant[tau] += int((score <= tau).sum().item())
    if units == 0:
        raise ValueError("sparsity_baselines needs at least one unit")
    out = {"sparsity/dead_frac": dead / units, "sparsity/zero_frac": zero / cells}
    out |= {f"sparsity/dormant_frac/{tau:g}": n / units for tau, n in dormant.items()}
    return out


def chance_accuracy(labels: torch.Tensor) -> float:
    """The accuracy of always predicting the most frequent label: what a collapsed network,
    whose output no longer depends on its input, reaches at most."""
    return float(torch.bincount(labels.flatten().long().cpu()).max().item() / labels.numel())


COLLAPSED_DEAD_SHARE = 0.95  # the share of dead units (never > 0 on the probe set) of a collapse


def collapse(dead_frac: float, accuracy: float, chance: float) -> str | None:
    """Why a network counts as collapsed, None when it does not: accuracy at or below chance
    with (nearly) every counted unit dead, so that E = 0 and the accuracy say nothing about
    pruning (e.g. trainer.lr=10). A slow start (chance accuracy, live units) is not one."""
    if dead_frac >= COLLAPSED_DEAD_SHARE and accuracy <= chance + 1e-9:
        return (f"{dead_frac:.1%} of the counted units dead and test/acc {accuracy:.4f} at or "
                f"below chance ({chance:.4f}, the most frequent class)")
    return None
