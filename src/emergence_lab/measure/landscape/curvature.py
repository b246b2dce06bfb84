"""Curvature of the training loss at the weights, on the surviving coordinates only: the top
eigenvalue of the Hessian (Lanczos, scipy's ARPACK) and its trace (Hutch++, Meyer et al. 2020),
with the Hessian-vector products of curvlinops (Dangel et al.); for a pruned network the
Hessian restricted to the surviving weights (v -> m * H(m * v) on the masked subspace), whose
trace per surviving parameter is the "density" the paper's reading asks for."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, eigsh

with warnings.catch_warnings():  # backpack, under curvlinops, still calls torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from curvlinops import HessianLinearOperator, SubmatrixLinearOperator, hutchpp_trace

from emergence_lab.measure import keys
from emergence_lab.measure.landscape.base import (
    MEASURES,
    LandscapeMeasure,
    LandscapeSettings,
    Problem,
)


def hessian(pb: Problem):
    """The Hessian of the mean loss on the batch, restricted to the surviving coordinates."""
    full = HessianLinearOperator(pb.model, pb.loss, pb.params,
                                 [(pb.x, pb.y)], progressbar=False, check_deterministic=False)
    if all(m is None for m in pb.masks):
        return full
    idx = pb.surviving_index()
    return SubmatrixLinearOperator(full, idx, idx)


def top_eigenvalue(op, settings: LandscapeSettings) -> float:
    """The largest (algebraic) eigenvalue, by Lanczos from a seeded start vector; a dense
    eigendecomposition for an operator smaller than the Krylov space."""
    n = op.shape[0]
    if n <= settings.lanczos + 1:
        dense = op @ torch.eye(n, device=op.device, dtype=op.dtype)
        return float(torch.linalg.eigvalsh((dense + dense.T) / 2).max())
    v0 = np.random.default_rng(settings.seed).standard_normal(n)
    try:
        return float(eigsh(op.to_scipy(), k=1, which="LA", v0=v0, ncv=settings.lanczos,
                           tol=1e-3, maxiter=10, return_eigenvectors=False)[0])
    except ArpackNoConvergence as exc:  # the best estimate so far
        return float(exc.eigenvalues.max()) if len(exc.eigenvalues) else float("nan")


def trace(op, settings: LandscapeSettings) -> float:
    """Hutch++ with `probes` products (a multiple of 3); exact for an operator no larger."""
    n = op.shape[0]
    m = max(3, settings.probes - settings.probes % 3)
    if n <= m:
        return float(torch.trace(op @ torch.eye(n, device=op.device, dtype=op.dtype)))
    with torch.random.fork_rng(devices=[op.device] if op.device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        return float(hutchpp_trace(op, m))


def curvature(pb: Problem, settings: LandscapeSettings) -> dict[str, object]:
    op, n = hessian(pb), pb.n_params
    t = trace(op, settings)
    return {keys.LAMBDA_MAX: top_eigenvalue(op, settings), keys.TRACE: t,
            keys.TRACE_PER_PARAM: t / n if n else float("nan")}


MEASURES.add(LandscapeMeasure(
    "curvature", curvature,
    "the top Hessian eigenvalue (Lanczos) and the trace (Hutch++), total and per surviving "
    "parameter, of the training loss on the probe batch, on the surviving weights"))
