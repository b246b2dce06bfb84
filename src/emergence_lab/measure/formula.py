"""The paper's formula: paths from inactive to active units of a chain of layers (arXiv
2409.01568, 3.3), relative emergence, and the emergence-based stopper's rule.

`counting.py` counts the same routes on any traced network (equal on chains).

Pure functions: tensors and integers in, integers and floats out. No tracking, no files.
"""

from __future__ import annotations

from collections.abc import Sequence


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
