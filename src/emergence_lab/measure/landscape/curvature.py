"""Curvature of the training loss at the weights, on the surviving coordinates only: the top
eigenvalue of the Hessian (Lanczos) and its trace (Hutch++, Meyer et al. 2020,
with curvlinops' Hessian operator, Dangel et al.); for a pruned network the Hessian restricted
to the surviving weights (v -> m * H(m * v) on the masked subspace), whose trace per surviving
parameter is the "density" the paper's reading asks for.

Lanczos asks for one vector at a time; curvlinops' products pay a forward and a backward pass
per call (cheap per vector on the blocks Hutch++ sends, 0.1 s a single vector on the paper
MLP), so Lanczos multiplies through a retained double-backward graph of the same loss (`hvp`,
6 ms a vector): the same Hessian, both checked against a dense one in the tests."""

from __future__ import annotations

import warnings

import torch

from emergence_lab.measure import keys
from emergence_lab.measure.landscape.base import (
    MEASURES,
    LandscapeMeasure,
    LandscapeSettings,
    Problem,
    generator,
)


def _curvlinops():
    """curvlinops, imported when a curvature is measured (its import takes a second; a config
    that names the measure need not pay it)."""
    with warnings.catch_warnings():  # backpack, under curvlinops, still calls torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        import curvlinops
    return curvlinops


def hessian(pb: Problem):
    """The Hessian of the mean loss on the batch, restricted to the surviving coordinates."""
    cl = _curvlinops()
    full = cl.HessianLinearOperator(pb.model, pb.loss, pb.params,
                                 [(pb.x, pb.y)], progressbar=False, check_deterministic=False)
    if all(m is None for m in pb.masks):
        return full
    idx = pb.surviving_index()
    return cl.SubmatrixLinearOperator(full, idx, idx)


def hvp(pb: Problem):
    """v -> H v on the surviving coordinates (flat tensors on the weights' device), through one
    retained graph of the gradient (double backward)."""
    loss = pb.loss(pb.model(pb.x), pb.y)
    grads = torch.autograd.grad(loss, pb.params, create_graph=True)
    idx = torch.tensor(pb.surviving_index(), device=pb.x.device)
    sizes = [p.numel() for p in pb.params]
    full = torch.zeros(sum(sizes), device=pb.x.device, dtype=pb.params[0].dtype)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        full.zero_()
        full[idx] = v
        vs = [t.view_as(p) for t, p in zip(full.split(sizes), pb.params, strict=True)]
        hv = torch.autograd.grad(grads, pb.params, grad_outputs=vs, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv])[idx]

    return matvec, len(idx)


def lanczos(matvec, n: int, steps: int, gen: torch.Generator, device: torch.device
            ) -> float:
    """The largest Ritz value after `steps` Lanczos steps (full reorthogonalization) from a
    seeded start vector: the top eigenvalue of a symmetric operator, converging first to the
    extremes of its spectrum (Golub & Van Loan, 10.1). On torch, on the operator's device:
    scipy's ARPACK spent a second beyond its 21 products on the paper MLP's 535k coordinates
    here, against 0.13 s for the products themselves."""
    steps = min(steps, n)
    q = torch.randn(n, generator=gen, device=device)
    basis = [q / q.norm()]
    alphas, betas = [], []
    for j in range(steps):
        w = matvec(basis[j])
        alphas.append(float(w @ basis[j]))
        Q = torch.stack(basis)
        w = w - Q.T @ (Q @ w)
        w = w - Q.T @ (Q @ w)  # twice is enough (Giraud et al. 2005)
        beta = float(w.norm())
        if j == steps - 1 or beta < 1e-8 * max(1.0, abs(alphas[-1])):
            break
        betas.append(beta)
        basis.append(w / beta)
    k = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(betas[:k - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    return float(torch.linalg.eigvalsh(t).max())


def top_eigenvalue(pb: Problem, settings: LandscapeSettings) -> float:
    """The largest (algebraic) eigenvalue of the Hessian on the surviving weights: Lanczos with
    `lanczos` steps; exact (the full Krylov space) for an operator no larger."""
    matvec, n = hvp(pb)
    gen = generator(settings, pb.x.device, 3)
    return lanczos(matvec, n, n if n <= settings.lanczos else settings.lanczos, gen, pb.x.device)


def trace(op, settings: LandscapeSettings) -> float:
    """Hutch++ with `probes` products (a multiple of 3); exact for an operator no larger."""
    n = op.shape[0]
    m = max(3, settings.probes - settings.probes % 3)
    if n <= m:
        return float(torch.trace(op @ torch.eye(n, device=op.device, dtype=op.dtype)))
    with torch.random.fork_rng(devices=[op.device] if op.device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        return float(_curvlinops().hutchpp_trace(op, m))


def curvature(pb: Problem, settings: LandscapeSettings) -> dict[str, object]:
    n = pb.n_params
    t = trace(hessian(pb), settings)
    return {keys.LAMBDA_MAX: top_eigenvalue(pb, settings), keys.TRACE: t,
            keys.TRACE_PER_PARAM: t / n if n else float("nan")}


MEASURES.add(LandscapeMeasure(
    "curvature", curvature, (keys.LAMBDA_MAX, keys.TRACE, keys.TRACE_PER_PARAM),
    "the top Hessian eigenvalue (Lanczos) and the trace (Hutch++), total and per surviving "
    "parameter, of the training loss on the probe batch, on the surviving weights"))
