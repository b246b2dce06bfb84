"""Measure once, analyse any way: every activity rule and both route countings against a
brute-force enumeration of paths; stored measurements give E exactly; normalization
recalibrated on a copy; units are units under unstructured pruning."""

from __future__ import annotations

import copy
import itertools
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emergence_lab.measure import Measurement, Setting, measure, measure_emergence
from emergence_lab.measure.counting import COUNTINGS
from emergence_lab.measure.probe import needs_recalibration
from emergence_lab.measure.rules import RULES
from emergence_lab.models.mlp import MLP
from emergence_lab.models.resnet import ResNet
from emergence_lab.prune.masks import apply_masks

THETAS = {"mean": [0.0, 0.05, 0.2], "fraction": [0.0, 0.1, 0.3], "dormant": [0.0, 0.5, 1.0]}


def _active_by_hand(acts: torch.Tensor, rule: str, theta: float, frac: float) -> list[bool]:
    """The rule read straight off the activations (samples, units)."""
    if rule == "mean":
        return (acts.mean(0) > theta).tolist()
    if rule == "fraction":
        return ((acts > theta).float().mean(0) > frac).tolist()
    level = acts.abs().mean(0)
    return (level / level.mean() > theta).tolist() if level.mean() > 0 else [False] * acts.shape[1]


# ---- an MLP chain, brute force on its weight matrices (independent of the traced graph) ----

def _chain_paths(mats: list[torch.Tensor], active: list[list[bool]], edges: bool) -> int:
    """Enumerate every path unit by unit: from an inactive unit of layer i to an active unit of
    a later layer j, one unit per layer between; along nonzero weights only when `edges`."""
    total = 0
    n = len(active)

    def walk(layer: int, unit: int) -> int:
        found = 0
        for nxt in range(len(active[layer + 1])):
            if edges and mats[layer][nxt, unit] == 0:
                continue
            found += active[layer + 1][nxt]
            if layer + 2 < n:
                found += walk(layer + 1, nxt)
        return found

    for i in range(n - 1):
        for u in range(len(active[i])):
            if not active[i][u]:
                total += walk(i, u)
    return total


class Taps:
    """The activations after every ReLU module in one forward, by forward hooks (not the fx
    probe); conv maps averaged over positions."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        self.out: list[torch.Tensor] = []
        hooks = [m.register_forward_hook(lambda mod, i, o: self.out.append(
            o.detach().flatten(2).mean(2) if o.dim() > 2 else o.detach()))
            for m in model.modules() if isinstance(m, nn.ReLU)]
        with torch.no_grad():
            model(x)
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("seed", range(6))
def test_every_rule_and_counting_equals_path_enumeration_on_masked_mlps(seed):
    torch.manual_seed(seed)
    rnd = random.Random(seed)
    widths = [rnd.randint(2, 5) for _ in range(rnd.randint(2, 4))]
    model = MLP((1, 2, 3), 3, widths).eval()
    masked = seed % 2 == 1
    if masked:
        apply_masks(model, {f"blocks.{i}.0.weight": (torch.rand_like(b[0].weight) > 0.5).float()
                            for i, b in enumerate(model.blocks)})
    x = torch.randn(40, 1, 2, 3)
    acts = Taps(model, x).out
    m, _ = measure(model, x)
    mats = [b[0].weight.detach() for b in model.blocks][1:]
    for rule, thetas in THETAS.items():
        for theta, counting in itertools.product(thetas, COUNTINGS.names()):
            frac = 0.25 if rule == "fraction" else 0.5
            active = [_active_by_hand(a, rule, theta, frac) for a in acts]
            expected = _chain_paths(mats, active, edges=counting == "edges")
            got = m.at(Setting(rule, theta, counting, frac))
            assert got.E == expected, (rule, theta, counting, masked)


# ---- residual and grouped nets: brute force over the channel graph of the traced ops ----

class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 4)
        self.fa, self.fb, self.fc3 = nn.Linear(4, 2), nn.Linear(4, 3), nn.Linear(5, 3)

    def forward(self, x):
        a = F.relu(self.fc1(x.flatten(1)))
        b = F.relu(self.fc2(a) + a)  # a residual sum: two routes where both carry a unit
        return self.fc3(torch.cat([F.relu(self.fa(b)), F.relu(self.fb(b))], dim=1))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        a = F.relu(self.c1(x))
        b = F.relu(self.c2(a))
        return self.head(b.mean(dim=(2, 3)))


def _graph_paths(m: Measurement, active: dict[str, torch.Tensor], edges: bool) -> int:
    """Every path over (op, channel) nodes, enumerated one by one, from an inactive live unit to
    an active live unit of a later counted layer (the op semantics written out again)."""
    ops, layer_of = m.ops, {i: n for n, i in m.layers.items() if m.kinds[n] == "hidden"}

    def preds(i: int, c: int) -> list[tuple[int, int]]:
        op = ops[i]
        if not bool(m.alive[i][c]) or op.kind == "input":
            return []
        if op.kind == "dense":
            src = ops[op.inputs[0]].channels
            per_in, per_out = src // op.groups, op.channels // op.groups
            g = c // per_out
            conn = m.connections.get(i)
            return [(op.inputs[0], g * per_in + j) for j in range(per_in)
                    if not edges or conn is None or bool(conn[c, j])]
        if op.kind == "sum":
            return [(j, c if ops[j].channels == op.channels else 0) for j in op.inputs]
        if op.kind == "cat":
            off = 0
            for j in op.inputs:
                if c < off + ops[j].channels:
                    return [(j, c - off)]
                off += ops[j].channels
        return [(op.inputs[0], c)]

    def back(i: int, c: int) -> int:
        """Paths arriving at (i, c) from an inactive counted unit of an earlier layer."""
        total = 0
        for j, d in preds(i, c):
            if j in layer_of and bool(m.alive[j][d]):
                total += 0 if bool(active[layer_of[j]][d]) else 1
            total += back(j, d)
        return total

    return sum(back(i, c) for i, name in layer_of.items() for c in range(ops[i].channels)
               if bool(active[name][c]) and bool(m.alive[i][c]))


@pytest.mark.parametrize("net, shape", [(Residual, (1, 3)), (Grouped, (2, 4, 4))])
@pytest.mark.parametrize("masked", [False, True])
def test_rules_and_countings_equal_path_enumeration_on_residual_and_grouped_nets(net, shape, masked):
    torch.manual_seed(3)
    model = net().eval()
    if masked:
        apply_masks(model, {f"{n}.weight": (torch.rand_like(mod.weight) > 0.4).float()
                            for n, mod in model.named_modules()
                            if isinstance(mod, nn.Linear | nn.Conv2d)})
    x = torch.randn(30, *shape)
    m, _ = measure(model, x)
    for rule, thetas in THETAS.items():
        for theta, counting in itertools.product(thetas, COUNTINGS.names()):
            frac = 0.5
            s = Setting(rule, theta, counting, frac)
            active = {n: RULES[rule].active(m.stats[n], theta, frac) for n in m.layers}
            assert m.at(s).E == _graph_paths(m, active, counting == "edges"), (rule, theta, counting)
    unpruned = measure(net().eval(), x)[0]
    assert unpruned.at(Setting(counting="units")).E == unpruned.at(Setting(counting="edges")).E


def test_edges_never_exceed_units_and_fall_with_pruning():
    torch.manual_seed(0)
    model = MLP((1, 4, 4), 4, [12, 10, 8]).eval()
    x = torch.randn(64, 1, 4, 4)
    before = measure(model, x)[0]
    assert before.at(Setting(counting="edges")).E == before.at(Setting(counting="units")).E
    apply_masks(model, {f"blocks.{i}.0.weight": (torch.rand_like(b[0].weight) > 0.7).float()
                        for i, b in enumerate(model.blocks)})
    after = measure(model, x)[0]
    for theta in (0.0, 0.05, 0.2):
        assert after.at(Setting(theta=theta, counting="edges")).E <= \
            after.at(Setting(theta=theta, counting="units")).E
    assert after.at(Setting(counting="edges")).E < after.at(Setting(counting="units")).E


def test_a_stored_measurement_gives_the_same_e_under_every_setting(tmp_path):
    from emergence_lab.measure import record

    torch.manual_seed(0)
    model = ResNet((3, 8, 8), 4, depth=8, width=4).eval()
    apply_masks(model, {"blocks.0.conv1.weight": (torch.rand_like(model.blocks[0].conv1.weight)
                                                  > 0.5).float()})
    x = torch.randn(32, 3, 8, 8)
    m = measure(model, x)[0]
    back = record.load(record.save(m, tmp_path / record.file_name(3)))
    for rule, counting in itertools.product(RULES.names(), COUNTINGS.names()):
        s = Setting(rule, 0.1, counting)
        assert back.at(s) == m.at(s)
    assert record.parse_name("pruned_0005.pt") == ("pruned", 5)


def test_measure_emergence_takes_rule_and_counting():
    torch.manual_seed(0)
    model = MLP((1, 2, 2), 2, [6, 5]).eval()
    x = torch.randn(20, 1, 2, 2)
    m = measure(model, x)[0]
    for rule, counting in itertools.product(RULES.names(), COUNTINGS.names()):
        assert measure_emergence(model, x, 0.1, rule, counting) == m.at(Setting(rule, 0.1, counting))
    with pytest.raises(ValueError, match=r"threshold.rule must be one of \['dormant', 'fraction', "
                                         r"'mean'\], got 'median'"):
        measure_emergence(model, x, rule="median")
    with pytest.raises(ValueError, match=r"threshold.counting must be one of \['edges', 'units'\]"):
        measure_emergence(model, x, counting="paths")
    with pytest.raises(ValueError, match="must be a finite number >= 0, got nan"):
        measure_emergence(model, x, theta=float("nan"))


def test_batch_norm_that_never_saw_data_is_recalibrated_on_a_copy():
    """At initialization (running statistics at their defaults: mean 0, variance 1) eval mode
    normalizes nothing; the network is measured with the probe set's statistics instead, on a
    copy: the model's buffers stay bit-identical."""
    torch.manual_seed(0)
    model = ResNet((3, 8, 8), 4, depth=8, width=4)
    before = copy.deepcopy(model.state_dict())
    assert needs_recalibration(model)
    x = torch.randn(64, 3, 8, 8) * 3 + 2
    m = measure(model, x)[0]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # by hand: the same network in train mode (batch statistics) on the whole probe set
    net = copy.deepcopy(model).train()
    with torch.no_grad():
        expected = torch.relu(net.bn(net.conv(x))).mean(dim=(0, 2, 3))
    first = m.stats[next(n for n in m.layers if m.kinds[n] == "hidden")]
    assert torch.allclose(first.mean, expected, rtol=1e-3, atol=1e-4)  # running var is unbiased
    with torch.no_grad():  # what eval mode with the default statistics would have read
        stale = torch.relu(model.eval().bn(model.conv(x))).mean(dim=(0, 2, 3))
    assert not torch.allclose(first.mean, stale, rtol=0.1)
    model.train()
    with torch.no_grad():
        model(x)  # now it has seen data: measured in eval mode with its own statistics
    assert not needs_recalibration(model)


@pytest.mark.parametrize("bias", [True, False])
def test_unstructured_pruning_never_changes_a_layers_unit_count(bias):
    """A row masked to zero by unstructured pruning keeps its unit, with or without a bias;
    structured pruning (units_mask) removes it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5, bias=bias), nn.ReLU(), nn.Linear(5, 4, bias=bias),
                          nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(16, 1, 2, 2)
    w = torch.ones(5, 4)
    w[:3] = 0  # three rows fully masked
    apply_masks(model, {"1.weight": w})
    m = measure_emergence(model, x, theta=0.0)
    assert [n for n, _ in m.layers.values()] == [5, 4]
    apply_masks(model, {"1.units": torch.tensor([0.0, 0, 0, 1, 1])})
    m = measure_emergence(model, x, theta=0.0)
    assert [n for n, _ in m.layers.values()] == [2, 4]
