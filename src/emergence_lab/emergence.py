"""Emergence of a layered network: paths from inactive to active units (arXiv 2409.01568, 3.3).

Pure functions: tensors and integers in, integers and floats out. No tracking, no files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

ACTIVITY_MODES = ("mean", "fraction")


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


def active_counts(
    activations: Mapping[str, torch.Tensor], theta: float, mode: str = "mean",
    min_fraction: float = 0.5,
) -> dict[str, tuple[int, int]]:
    """(units, active units) per layer, in the order of the mapping."""
    counts = {}
    for name, acts in activations.items():
        active = unit_activity(acts, theta, mode, min_fraction)
        counts[name] = (active.numel(), int(active.sum().item()))
    return counts


def emergence_metrics(
    counts: Mapping[str, tuple[int, int]], n_params: int
) -> dict[str, float]:
    """The logged emergence metrics: E, relative E and the active fraction of each layer."""
    sizes = [n for n, _ in counts.values()]
    active = [a for _, a in counts.values()]
    e = emergence(sizes, active)
    metrics = {"emergence/E": float(e), "emergence/relative": relative_emergence(e, n_params)}
    for name, (n, a) in counts.items():
        metrics[f"emergence/active_frac/{name}"] = a / n if n else 0.0
    return metrics


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
