"""emergence-lab: emergence (paths from inactive to active units) under pruning and training.

`measure_emergence(model, probe, theta=0.05, layers=("hidden",))` measures any traced
feed-forward network (see `emergence_lab.measure`); `measure_landscape(model, x, y)` the loss
landscape around its weights (top Hessian eigenvalue, trace, surviving parameters; slices with
`measures=("curvature", "slices")`; see `emergence_lab.measure.landscape`).
"""

from __future__ import annotations

__all__ = ["measure_emergence", "Emergence", "measure_landscape"]


def __getattr__(name: str):  # imported on first use: `import emergence_lab.report` needs no torch
    if name == "measure_landscape":
        from emergence_lab.measure import landscape

        return landscape.measure_landscape
    if name in __all__:
        from emergence_lab import measure

        return getattr(measure, name)
    raise AttributeError(f"module 'emergence_lab' has no attribute {name!r}")
