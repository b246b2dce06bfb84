"""Emergence of a layered network: paths from inactive to active units (arXiv 2409.01568, 3.3).

`emergence` is the paper's formula for a chain of layers; `unitgraph.py` counts the same routes
on any traced network (equal on chains) and `measure.py` measures a model.

Pure functions: tensors and integers in, integers and floats out. No tracking, no files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

ACTIVITY_MODES = ("mean", "fraction")
# Metric-key prefixes of E and relative E at each threshold of threshold.grid, per activity mode
# (the full key ends with the threshold, e.g. emergence/E_theta/0.05).
THETA_KEYS = {"mean": "emergence/E_theta/", "fraction": "emergence/E_theta_fraction/"}
RELATIVE_THETA_KEYS = {"mean": "emergence/relative_theta/",
                       "fraction": "emergence/relative_theta_fraction/"}


def emergence(sizes: Sequence[int], active: Sequence[int]) -> int:
    """Paths from an inactive unit of layer i to an active unit of a later layer j.

    E = sum_{i<j} (n_i - a_i) * a_j * prod_{k=i+1}^{j-1} n_k, in exact Python integers
    (E grows like the product of layer widths and overflows int64 in wide or deep nets).
    """
    sizes, active = list(sizes), list(active)
    if len(sizes) != len(active):
        raise ValueError(f"sizes and active differ in length: {len(sizes)} != {len(active)}")
    if len(sizes) < 2:
        raise ValueError(f"emergence needs at least 2 counted layers, got {len(sizes)}")
    for i, (n, a) in enumerate(zip(sizes, active, strict=True)):
        if int(n) != n or int(a) != a:
            raise ValueError(f"layer {i}: sizes and active counts must be integers, got {n}, {a}")
        if n < 0 or a < 0:
            raise ValueError(f"layer {i}: counts must be >= 0, got n={n}, a={a}")
        if a > n:
            raise ValueError(f"layer {i}: active count {a} exceeds the layer size {n}")
    # O(N): paths_in = paths from any inactive unit of an earlier layer into the current layer.
    total, paths_in = 0, 0
    for n, a in zip(sizes, active, strict=True):
        n, a = int(n), int(a)
        total += paths_in * a
        paths_in = paths_in * n + (n - a)
    return total


def relative_emergence(e: int, n_params: int) -> float:
    """Emergence per surviving parameter (unpruned weights plus biases)."""
    if n_params <= 0:
        raise ValueError(f"n_params must be > 0, got {n_params}")
    return e / n_params


def unit_activity(
    activations: torch.Tensor, theta: float, mode: str = "mean", min_fraction: float = 0.5
) -> torch.Tensor:
    """Boolean per unit: is it active on this probe set?

    activations: (samples, units) post-activation outputs (conv maps already averaged over
    positions). mode "mean": the unit's mean over samples exceeds theta. mode "fraction": the
    unit exceeds theta on more than min_fraction of the samples.
    """
    if activations.dim() != 2:
        raise ValueError(f"activations must be (samples, units), got shape {tuple(activations.shape)}")
    if mode == "mean":
        return activations.mean(dim=0) > theta
    if mode == "fraction":
        return (activations > theta).float().mean(dim=0) > min_fraction
    raise ValueError(f"activity mode must be one of {ACTIVITY_MODES}, got {mode!r}")


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


def stop_epoch(history: Sequence[tuple[int, float]], epsilon: float, patience: int) -> int | None:
    """The first epoch at which E has been <= epsilon for `patience` epochs in a row, or None.

    history: (epoch, E) in epoch order. The emergence-based stopper (paper, section 4.5) and the
    report's "when would it have fired" both use this.
    """
    streak = 0
    for epoch, e in history:
        streak = streak + 1 if e <= epsilon else 0
        if streak >= patience:
            return epoch
    return None
