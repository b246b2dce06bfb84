"""The loss landscape measures against what is known: a dense Hessian (torch.autograd) on tiny
networks, masked and unmasked; a convex model; a loss made rough on purpose; a rescaling that
leaves the function as it was."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from emergence_lab import measure_emergence, measure_landscape
from emergence_lab.measure.landscape import LandscapeSettings

EXACT = LandscapeSettings(probes=300, lanczos=20)  # probes >= dim: the exact trace


def _data(n: int = 48, d: int = 6, k: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def _mlp(seed: int = 0, d: int = 6, h: int = 5, k: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, k))


def dense_hessian(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in net.named_parameters()]
    params = tuple(p.detach() for p in net.parameters())

    def loss(*ps):
        return nn.functional.cross_entropy(functional_call(net, dict(zip(names, ps, strict=True)), (x,)), y)

    h = torch.autograd.functional.hessian(loss, params)
    return torch.cat([torch.cat([h[i][j].reshape(params[i].numel(), params[j].numel())
                                 for j in range(len(params))], 1) for i in range(len(params))], 0)


def _prune(net: nn.Module, share: float = 0.5, seed: int = 1) -> torch.Tensor:
    """Masks a share of the first layer's weights as the project's masks do (a weight_mask
    buffer, the weight zeroed); returns the flat keep-vector over all parameters."""
    g = torch.Generator().manual_seed(seed)
    layer = net[0]
    mask = (torch.rand(layer.weight.shape, generator=g) >= share).float()
    layer.register_buffer("weight_mask", mask)
    with torch.no_grad():
        layer.weight.mul_(mask)
    keep = [mask.reshape(-1)] + [torch.ones(p.numel()) for n, p in net.named_parameters()
                                 if n != "0.weight"]
    return torch.cat(keep) > 0


def test_eigenvalue_and_trace_agree_with_a_dense_hessian():
    x, y = _data()
    net = _mlp()
    got = measure_landscape(net, x, y, settings=EXACT)
    dense = dense_hessian(net, x, y)
    assert got.lambda_max == pytest.approx(torch.linalg.eigvalsh(dense).max().item(), rel=1e-3)
    assert got.trace == pytest.approx(torch.trace(dense).item(), rel=1e-4)
    assert got.n_params == dense.shape[0] and got.trace_per_param == pytest.approx(
        got.trace / got.n_params)


def test_a_pruned_network_is_measured_on_its_surviving_weights():
    x, y = _data()
    net = _mlp()
    keep = _prune(net)
    got = measure_landscape(net, x, y, settings=EXACT)
    sub = dense_hessian(net, x, y)[keep][:, keep]
    assert got.n_params == int(keep.sum()) < keep.numel()
    assert got.lambda_max == pytest.approx(torch.linalg.eigvalsh(sub).max().item(), rel=1e-3)
    assert got.trace == pytest.approx(torch.trace(sub).item(), rel=1e-4)
    assert got.trace_per_param == pytest.approx(torch.trace(sub).item() / int(keep.sum()), rel=1e-4)


def test_lanczos_and_hutchpp_estimate_a_larger_hessian():
    """Beyond the exact paths: a 30-wide hidden layer (about 300 parameters), 60 products."""
    x, y = _data(n=64, d=6, k=3)
    net = _mlp(h=30)
    got = measure_landscape(net, x, y, settings=LandscapeSettings(probes=150, lanczos=30))
    dense = dense_hessian(net, x, y)
    assert got.lambda_max == pytest.approx(torch.linalg.eigvalsh(dense).max().item(), rel=1e-2)
    assert got.trace == pytest.approx(torch.trace(dense).item(), rel=0.15)


def _fit(net: nn.Module, x, y, steps: int = 300, lr: float = 0.5) -> nn.Module:
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net


def test_a_convex_model_has_one_minimum_per_slice_and_no_negative_curvature():
    """Logistic regression (no hidden layer): the loss is convex in its weights."""
    x, y = _data()
    torch.manual_seed(0)
    net = _fit(nn.Sequential(nn.Linear(6, 3)), x, y)
    got = measure_landscape(net, x, y, ("curvature", "slices"),
                            LandscapeSettings(probes=300, slices=4, points=41))
    assert got.slice_minima == 1.0
    assert torch.linalg.eigvalsh(dense_hessian(net, x, y)).min().item() > -1e-6
    assert got.lambda_max > 0


class _Wavy(nn.Module):
    """Cross-entropy plus a sinusoid of the mean first logit: a rough surface."""

    reduction = "mean"

    def forward(self, out, y):
        return nn.functional.cross_entropy(out, y) + 0.02 * torch.sin(30 * out[:, 0].mean())


def test_a_loss_with_a_sinusoid_reads_rougher():
    x, y = _data()
    net = _fit(_mlp(), x, y)
    settings = LandscapeSettings(slices=3, points=61)
    plain = measure_landscape(net, x, y, ("slices",), settings)
    wavy = measure_landscape(net, x, y, ("slices",), settings, loss=_Wavy())
    assert wavy.roughness > 10 * plain.roughness
    assert wavy.slice_minima > plain.slice_minima


def test_a_function_preserving_rescaling_moves_the_slices_not_e():
    """Layer 1 (weights and biases) divided by c, layer 2 multiplied by c: a ReLU network
    computes the same function; the filter-normalized slices are the same, E is not (fewer
    units are above θ once layer 1's outputs shrink)."""
    x, y = _data(n=200)
    net = _fit(_mlp(h=8), x, y)
    scaled = _mlp(h=8)
    scaled.load_state_dict(net.state_dict())
    c = 20.0
    with torch.no_grad():
        scaled[0].weight.div_(c), scaled[0].bias.div_(c), scaled[2].weight.mul_(c)
    assert torch.allclose(net(x), scaled(x), atol=1e-5)
    settings = LandscapeSettings(slices=3, points=21)
    a = measure_landscape(net, x, y, ("slices",), settings)
    b = measure_landscape(scaled, x, y, ("slices",), settings)
    assert a.roughness == pytest.approx(b.roughness, rel=1e-3, abs=1e-12)
    assert a.slice_minima == b.slice_minima
    e_a = measure_emergence(net, x, theta=0.05, layers=("hidden", "output")).E
    e_b = measure_emergence(scaled, x, theta=0.05, layers=("hidden", "output")).E
    assert e_a != e_b


def test_the_plane_is_a_grid_of_losses_lowest_near_the_trained_weights():
    x, y = _data()
    net = _fit(_mlp(), x, y)
    got = measure_landscape(net, x, y, ("plane",), LandscapeSettings(plane_points=9))
    grid = torch.tensor(got.plane["loss"])
    assert grid.shape == (9, 9) and len(got.plane["ticks"]) == 9
    assert grid[4, 4] <= grid.min() + 1e-6 or grid[4, 4] < grid.mean()
    assert math.isnan(got.lambda_max)  # only what was asked for


def test_an_unknown_measure_names_the_valid_ones():
    x, y = _data()
    with pytest.raises(ValueError, match="curvature.*plane.*slices"):
        measure_landscape(_mlp(), x, y, ("hessian",))
