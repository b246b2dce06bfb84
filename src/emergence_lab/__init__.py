"""emergence-lab: emergence (paths from inactive to active units) under pruning and training.

`measure_emergence(model, probe, theta=0.05, layers=("hidden",))` measures any traced
feed-forward network (see `emergence_lab.measure`); `measure_landscape(model, x, y)` the loss
landscape around its weights (top Hessian eigenvalue, trace, surviving parameters; slices with
`measures=("curvature", "slices")`; see `emergence_lab.measure.landscape`).
"""

from __future__ import annotations

import importlib

WHERE = {"measure_emergence": "emergence_lab.measure", "Emergence": "emergence_lab.measure",
         "measure_landscape": "emergence_lab.measure.landscape"}  # each public name's module
__all__ = list(WHERE)


def __getattr__(name: str):  # imported on first use: `import emergence_lab.report` needs no torch
    if name in WHERE:
        return getattr(importlib.import_module(WHERE[name]), name)
    raise AttributeError(f"module 'emergence_lab' has no attribute {name!r}")
