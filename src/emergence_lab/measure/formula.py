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


def _upper_envelope(lines: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """The lines (slope, intercept) that are the maximum somewhere on S >= 0, by slope."""
    best: dict[int, int] = {}
    for a, b in lines:
        best[a] = max(b, best.get(a, b))
    hull: list[tuple[int, int]] = []
    for a3, b3 in sorted(best.items()):
        while len(hull) >= 2:
            (a1, b1), (a2, b2) = hull[-2], hull[-1]
            if (b3 - b1) * (a2 - a1) >= (b2 - b1) * (a3 - a1):  # the middle line is never above
                hull.pop()
            else:
                break
        hull.append((a3, b3))
    while len(hull) >= 2 and hull[1][1] >= hull[0][1]:  # steeper and no lower at S = 0
        hull.pop(0)
    return hull


def max_emergence(sizes: Sequence[int]) -> int:
    """The largest E these counted layers allow, over every choice of active counts (what E
    can be at most; the paper's numbers are compared with it). E is linear in each a_j, so the
    maximum has every layer all active or all inactive; with S the paths into layer j from
    inactive units before it, the best E from layer j on is a maximum of lines in S, kept as
    their upper envelope from the last layer back (exact integers; layers ~ dozens)."""
    sizes = [int(n) for n in sizes]
    if len(sizes) < 2 or min(sizes) < 0:
        raise ValueError(f"max_emergence needs at least 2 layer sizes >= 0, got {sizes}")
    lines = {(0, 0)}  # the best E from past the last layer on: 0 whatever S is
    for n in reversed(sizes):
        # all active: gains n S, then S n flows on; all inactive: gains 0, then S n + n
        lines = set(_upper_envelope({(n + a * n, b) for a, b in lines}
                                    | {(a * n, a * n + b) for a, b in lines}))
    return max(b for _, b in lines)  # S = 0 before the first layer


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
