"""The unit graph read from a torch.fx trace: routes, residual sums, exact E, clear errors."""

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emergence_lab import measure_emergence
from emergence_lab.measure.counting import routes
from emergence_lab.measure.formula import emergence
from emergence_lab.measure.graph import unit_graph
from emergence_lab.measure.ops import UnreadableGraph
from emergence_lab.models.cnn import CNN
from emergence_lab.models.mlp import MLP
from emergence_lab.models.resnet import ResNet


class Skip(nn.Module):
    """The worked example: a = relu(fc1(x)); b = relu(fc2(a)); c = relu(fc3(b) [+ a])."""

    def __init__(self, skip: bool):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(2, 3), nn.Linear(3, 3), nn.Linear(3, 3)
        self.relu = nn.ReLU()  # one module, called three times: three unit layers
        self.head = nn.Linear(3, 2)
        self.skip = skip

    def forward(self, x):
        a = self.relu(self.fc1(x))
        b = self.relu(self.fc2(a))
        c = self.fc3(b)
        return self.head(self.relu(c + a if self.skip else c))


def flags(*on, n=3):
    return torch.tensor([i in on for i in range(n)])


@pytest.mark.parametrize("skip, expected", [(False, 11), (True, 12)])
def test_the_worked_example_counts_11_without_the_skip_and_12_with_it(skip, expected):
    model = Skip(skip)
    graph = unit_graph(model, torch.zeros(1, 2))
    assert list(graph.layers) == ["relu", "relu:2", "relu:3"]
    active = dict(zip(graph.layers, [flags(0), flags(1, 2), flags(1)], strict=True))
    assert routes(graph.ops, graph.layers, active, graph.alive(model)) == expected


@pytest.mark.parametrize("skip, expected", [(False, 11), (True, 12)])
def test_the_worked_example_from_activations(skip, expected):
    """The same network with weights that make exactly A = {0}, B = {1, 2}, C = {1} active."""
    model = Skip(skip)
    with torch.no_grad():
        for fc, on in ((model.fc1, [0]), (model.fc2, [1, 2]), (model.fc3, [1])):
            fc.weight.zero_()
            fc.bias.copy_(torch.tensor([1.0 if i in on else -1.0 for i in range(3)]))
        model.fc3.bias[0] = -2.0  # c0 = relu(-2 + a0) stays inactive with the skip
    m = measure_emergence(model, torch.randn(16, 2), theta=0.05)
    assert [a for _, a in m.layers.values()] == [1, 2, 1]
    assert m.E == expected
    n_params = sum(p.numel() for p in model.parameters())
    assert m.relative == pytest.approx(expected / n_params)


@pytest.mark.parametrize("seed", range(20))
def test_on_a_random_chain_it_equals_the_papers_formula(seed):
    rng = random.Random(seed)
    if seed % 2:
        model = MLP((1, 6, 6), 4, [rng.randint(1, 40) for _ in range(rng.randint(2, 5))])
        shape = (1, 1, 6, 6)
    else:
        model = CNN((2, 8, 8), 3, [rng.randint(1, 9) for _ in range(rng.randint(1, 3))],
                    [rng.randint(1, 30) for _ in range(rng.randint(1, 3))])
        shape = (1, 2, 8, 8)
    kinds = rng.choice([("hidden",), ("input", "hidden"), ("hidden", "output"),
                        ("input", "hidden", "output")])
    graph = unit_graph(model, torch.zeros(shape), kinds)
    sizes = [graph.ops[i].channels for i in graph.layers.values()]
    active = {name: torch.rand(n, generator=torch.Generator().manual_seed(seed)) < rng.random()
              for name, n in zip(graph.layers, sizes, strict=True)}
    counts = [int(a.sum()) for a in active.values()]
    assert routes(graph.ops, graph.layers, active, graph.alive(model)) == emergence(sizes, counts)


def test_a_measured_mlp_equals_the_formula_on_its_counts():
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, [32, 16, 8])
    m = measure_emergence(model, torch.rand(64, 1, 8, 8), theta=0.05)
    sizes, active = zip(*m.layers.values(), strict=True)
    assert list(m.layers) == ["blocks.0.1", "blocks.1.1", "blocks.2.1"]
    assert m.E == emergence(sizes, active) > 0


def test_a_sum_of_two_branches_carrying_the_same_unit_gives_two_routes():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(2, 1), nn.Linear(1, 1)

        def forward(self, x):
            a = F.relu(self.fc1(x))
            return self.fc2(F.relu(a + a))

    model = Twice()
    graph = unit_graph(model, torch.zeros(1, 2))
    active = dict(zip(graph.layers, [flags(n=1), flags(0, n=1)], strict=True))
    assert routes(graph.ops, graph.layers, active, graph.alive(model)) == 2


def test_concatenation_keeps_each_inputs_channels_at_their_offsets():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(2, 2), nn.Linear(2, 3), nn.Conv1d(5, 1, 1)

        def forward(self, x):
            ya, yb = F.relu(self.a(x)), torch.sigmoid(self.b(x))
            return self.c(F.relu(torch.cat([ya, yb], dim=1)).unsqueeze(2)).flatten(1)

    with pytest.raises(UnreadableGraph, match="unsqueeze"):
        unit_graph(Cat(), torch.zeros(1, 2))

    class Cat2(Cat):
        def forward(self, x):
            ya, yb = F.relu(self.a(x)), torch.sigmoid(self.b(x))
            return F.relu(torch.cat([ya, yb], dim=1))

    model = Cat2()
    graph = unit_graph(model, torch.zeros(1, 2))
    assert [graph.ops[i].channels for i in graph.layers.values()] == [2, 3, 5]
    # ya inactive at 1, yb inactive at 0: each reaches its own channel of the cat only.
    active = dict(zip(graph.layers, [flags(0, n=2), flags(1, 2), flags(1, 2, n=5)], strict=True))
    assert routes(graph.ops, graph.layers, active, graph.alive(model)) == 2  # ya[1]->cat[1], yb[0]->cat[2]
    active["relu:2"] = flags(1, 3, n=5)
    assert routes(graph.ops, graph.layers, active, graph.alive(model)) == 1  # ya[1]->cat[1]; yb[1] active


def test_residual_net_counts_the_shortcut_routes():
    torch.manual_seed(0)
    model = ResNet((3, 16, 16), 10, depth=8, width=4)
    graph = unit_graph(model, torch.zeros(1, 3, 16, 16))
    # stem relu, then each of 3 blocks: relu after conv1 and after the sum
    assert len(graph.layers) == 7
    assert [op.kind for op in graph.ops].count("sum") == 3
    sizes = [graph.ops[i].channels for i in graph.layers.values()]
    active = {n: torch.arange(s) % 2 == 0 for n, s in zip(graph.layers, sizes, strict=True)}
    counts = [int(a.sum()) for a in active.values()]
    # The shortcuts add routes that a chain of the same layers would not have.
    assert routes(graph.ops, graph.layers, active, graph.alive(model)) > emergence(sizes, counts)


def test_an_unknown_op_is_an_error_naming_it_and_its_module():
    class Inner(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.inner, self.out = nn.Linear(3, 3), Inner(), nn.Linear(3, 2)

        def forward(self, x):
            return self.out(F.relu(self.inner(F.relu(self.fc(x)))))

    with pytest.raises(UnreadableGraph, match=r"torch.cumsum.*in module 'inner'"):
        unit_graph(Net(), torch.zeros(1, 3))


def test_data_dependent_control_flow_is_an_error_not_a_count():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return F.relu(self.fc(x)) if x.sum() > 0 else self.fc(x)

    with pytest.raises(UnreadableGraph, match="Branchy.*data-dependent control flow"):
        measure_emergence(Branchy(), torch.zeros(4, 3))


def test_structurally_removed_units_are_not_counted():
    from emergence_lab.prune.masks import apply_masks

    model = MLP((1, 2, 2), 2, [4, 3])
    w = torch.ones(4, 4)
    w[1:3] = 0  # units 1 and 2 of the first layer lose every weight and their bias
    apply_masks(model, {"blocks.0.0.weight": w, "blocks.0.0.bias": torch.tensor([1., 0, 0, 1])})
    m = measure_emergence(model, torch.rand(8, 1, 2, 2), theta=0.0)
    assert [n for n, _ in m.layers.values()] == [2, 3]
