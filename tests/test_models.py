import pytest
import torch
from torch import nn

from emergence_lab.emergence import active_counts, emergence_metrics
from emergence_lab.models import MLP, UnitModel, build_model, collect_activations


def toy_mlp() -> MLP:
    """2 inputs -> 3 -> 2 -> 2 classes, with hand-set weights."""
    m = MLP(in_shape=(2,), num_classes=2, hidden=[3, 2])
    with torch.no_grad():
        fc1, fc2 = m.blocks[0][0], m.blocks[1][0]
        fc1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        fc1.bias.zero_()
        fc2.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
        fc2.bias.copy_(torch.tensor([0.0, 0.01]))
        m.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        m.head.bias.zero_()
    return m


PROBE = torch.tensor([[1.0, 1.0], [1.0, 0.0]])


def test_hooks_give_exact_activations_and_counts():
    acts = collect_activations(toy_mlp(), PROBE, ["hidden"], batch_size=1)
    # hidden1 = relu(x, y, -x-y): [[1,1,0],[1,0,0]]; hidden2 = (hidden1[0], 0.01)
    assert torch.equal(acts["hidden1"], torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    assert torch.allclose(acts["hidden2"], torch.tensor([[1.0, 0.01], [1.0, 0.01]]))
    counts = active_counts(acts, theta=0.05)
    assert counts == {"hidden1": (3, 2), "hidden2": (2, 1)}
    assert emergence_metrics(counts, n_params=10)["emergence/E"] == 1.0  # (3-2) * 1
    # a lower threshold makes hidden2's second unit active as well
    assert active_counts(acts, theta=0.005) == {"hidden1": (3, 2), "hidden2": (2, 2)}


def test_input_and_output_layers_and_hooks_removed():
    model = toy_mlp()
    acts = collect_activations(model, PROBE, ["input", "hidden", "output"])
    assert list(acts) == ["input", "hidden1", "hidden2", "output"]
    assert torch.equal(acts["input"], PROBE)
    assert torch.allclose(acts["output"].sum(dim=1), torch.ones(2))  # softmax probabilities
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training  # mode restored


class TinyConv(UnitModel):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.act(self.conv(x)).mean(dim=(2, 3)))

    def hidden_units(self):
        return {"conv1": self.act}


def test_conv_filters_are_units_averaged_over_positions():
    model = TinyConv()
    with torch.no_grad():
        model.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        model.conv.bias.zero_()
    x = torch.tensor([[[[0.0, 0.4], [0.0, 0.0]]]])  # one sample, one channel, 2x2
    acts = collect_activations(model, x, ["hidden"])
    assert torch.allclose(acts["conv1"], torch.tensor([[0.1, 0.0]]))


def test_build_model_unknown_name():
    from emergence_lab.models import ModelConfig

    with pytest.raises(ValueError, match=r"model.name must be one of \['cnn', 'mlp'\], got 'resnet'"):
        build_model(ModelConfig(name="resnet"), (1, 8, 8), 10)
    with pytest.raises(ValueError, match="unknown unit layers"):
        toy_mlp().unit_layers(["hidden", "attention"])


def test_cnn_counts_filters_and_hidden_units():
    from emergence_lab.models import CNN

    model = CNN(in_shape=(1, 8, 8), num_classes=10, channels=[4, 6], hidden=[5])
    x = torch.rand(7, 1, 8, 8)
    assert model(x).shape == (7, 10)
    acts = collect_activations(model, x, ["input", "hidden", "output"])
    assert {k: tuple(v.shape) for k, v in acts.items()} == {
        "input": (7, 1), "conv1": (7, 4), "conv2": (7, 6), "hidden1": (7, 5), "output": (7, 10)}
    assert list(model.unit_producers()) == ["conv1", "conv2", "hidden1"]
    with pytest.raises(ValueError, match="shrink"):
        CNN(in_shape=(1, 8, 8), num_classes=10, channels=[4, 4, 4, 4], hidden=[])


def test_layer_order_is_the_forward_order_not_the_registration_order():
    from torch import nn

    from emergence_lab.pruning import prunable_modules

    class Backwards(nn.Module):  # registers the head first, calls it last
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(3, 2)
            self.body = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    m = Backwards()
    assert [type(x) for x in m.modules()][1:] == [nn.Linear, nn.Linear]
    assert prunable_modules(m) == [m.body, m.head]


def test_emergence_init_scales_weights_around_the_middle_layer():
    from emergence_lab.models import INITS

    torch.manual_seed(0)
    standard = MLP(in_shape=(6,), num_classes=2, hidden=[5, 4, 3])  # 4 weight layers
    torch.manual_seed(0)
    scaled = MLP(in_shape=(6,), num_classes=2, hidden=[5, 4, 3])
    from emergence_lab.models import EmergenceInitConfig, InitConfig

    INITS["emergence"].apply(scaled, EmergenceInitConfig(alpha=1.5))
    layers = lambda m: [b[0] for b in m.blocks] + [m.head]  # noqa: E731
    # middle = (4 - 1) // 2 = 1: factors 1.5^-1, 1, 1.5, 1.5^2; biases untouched
    for a, b, factor in zip(layers(standard), layers(scaled), [1 / 1.5, 1, 1.5, 2.25], strict=True):
        assert torch.allclose(b.weight, a.weight * factor)
        assert torch.equal(b.bias, a.bias)
    INITS["standard"].apply(scaled, InitConfig())  # standard leaves the network as torch made it
    assert torch.allclose(scaled.head.weight, standard.head.weight * 2.25)
