import re

import pytest
import torch
from torch import nn

from emergence_lab import measure_emergence
from emergence_lab.measure.graph import unit_graph
from emergence_lab.measure.probe import collect
from emergence_lab.models import build_model
from emergence_lab.models.mlp import MLP


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


def acts_of(model, x, kinds, batch_size=1024):
    g = unit_graph(model, x[:1], kinds)
    return collect(g.module, list(g.layers), x, batch_size)


def test_the_traced_graph_gives_exact_activations_and_counts():
    model = toy_mlp()
    acts = acts_of(model, PROBE, ["hidden"], batch_size=1)
    # hidden1 = relu(x, y, -x-y): [[1,1,0],[1,0,0]]; hidden2 = (hidden1[0], 0.01)
    assert torch.equal(acts["blocks.0.1"], torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    assert torch.allclose(acts["blocks.1.1"], torch.tensor([[1.0, 0.01], [1.0, 0.01]]))
    m = measure_emergence(model, PROBE, theta=0.05)
    assert m.layers == {"blocks.0.1": (3, 2), "blocks.1.1": (2, 1)}
    assert m.E == 1  # (3-2) * 1
    # a lower threshold makes hidden2's second unit active as well
    assert measure_emergence(model, PROBE, theta=0.005).layers["blocks.1.1"] == (2, 2)


def test_input_and_output_layers_and_the_mode_restored():
    model = toy_mlp()
    acts = acts_of(model, PROBE, ["input", "hidden", "output"])
    assert list(acts) == ["input", "blocks.0.1", "blocks.1.1", "output"]
    assert torch.equal(acts["input"], PROBE)
    assert torch.allclose(acts["output"].sum(dim=1), torch.ones(2))  # softmax probabilities
    assert model.training  # mode restored


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_conv_filters_are_units_averaged_over_positions():
    model = TinyConv()
    with torch.no_grad():
        model.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        model.conv.bias.zero_()
    x = torch.tensor([[[[0.0, 0.4], [0.0, 0.0]]]])  # one sample, one channel, 2x2
    acts = acts_of(model, x, ["hidden"])
    assert torch.allclose(acts["act"], torch.tensor([[0.1, 0.0]]))


def test_build_model_unknown_name():
    from emergence_lab.models import ModelConfig

    with pytest.raises(ValueError, match=r"model.name must be one of \['cnn', 'custom', 'mlp', "
                                         r"'resnet', 'torchvision', 'vgg'\], got 'resnett'"):
        build_model(ModelConfig(name="resnett"), (1, 8, 8), 10)
    with pytest.raises(ValueError, match="unknown unit layers"):
        unit_graph(toy_mlp(), PROBE, ["hidden", "attention"])


def test_cnn_counts_filters_and_hidden_units():
    from emergence_lab.models.cnn import CNN

    model = CNN(in_shape=(1, 8, 8), num_classes=10, channels=[4, 6], hidden=[5])
    x = torch.rand(7, 1, 8, 8)
    assert model(x).shape == (7, 10)
    acts = acts_of(model, x, ["input", "hidden", "output"])
    assert {k: tuple(v.shape) for k, v in acts.items()} == {
        "input": (7, 1), "convs.0.1": (7, 4), "convs.1.1": (7, 6), "fcs.0.1": (7, 5),
        "output": (7, 10)}
    with pytest.raises(ValueError, match="shrink"):
        CNN(in_shape=(1, 8, 8), num_classes=10, channels=[4, 4, 4, 4], hidden=[])


def test_layer_order_is_the_forward_order_not_the_registration_order():
    from torch import nn

    from emergence_lab.prune.base import prunable_modules

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
    from emergence_lab.models import InitConfig
    from emergence_lab.models.inits import EmergenceInitConfig

    INITS["emergence"].apply(scaled, EmergenceInitConfig(alpha=1.5))
    layers = lambda m: [b[0] for b in m.blocks] + [m.head]  # noqa: E731
    # middle = (4 - 1) // 2 = 1: factors 1.5^-1, 1, 1.5, 1.5^2; biases untouched
    for a, b, factor in zip(layers(standard), layers(scaled), [1 / 1.5, 1, 1.5, 2.25], strict=True):
        assert torch.allclose(b.weight, a.weight * factor)
        assert torch.equal(b.bias, a.bias)
    INITS["standard"].apply(scaled, InitConfig())  # standard leaves the network as torch made it
    assert torch.allclose(scaled.head.weight, standard.head.weight * 2.25)


@pytest.mark.parametrize("settings, shape, layers", [
    ("resnet", (3, 16, 16), 1 + 9 * 2),  # stem, then two activations per block
    ("vgg", (3, 32, 32), 13),
    ("torchvision", (1, 28, 28), 1 + 8 * 2),  # resnet18 on one-channel 28x28 inputs
])
def test_the_literatures_models_build_train_and_trace(settings, shape, layers):
    from emergence_lab.models import MODELS

    entry = MODELS[settings]
    small = {"resnet": {"width": 4}, "vgg": {"width": 4}, "torchvision": {}}[settings]
    model = build_model(entry.settings(**small), shape, 10)
    x = torch.rand(4, *shape)
    loss = model(x).logsumexp(dim=1).mean()
    loss.backward()  # trains: every parameter gets a gradient
    assert all(p.grad is not None for p in model.parameters())
    graph = unit_graph(model, x[:1])
    assert len(graph.layers) == layers
    m = measure_emergence(model, x, theta=0.0)
    assert m.E >= 0 and len(m.layers) == layers


def test_torchvision_models_are_adapted_to_the_data_set_and_bad_names_fail():
    from emergence_lab.models.torchvision_arch import TorchvisionConfig

    model = build_model(TorchvisionConfig(arch="resnet18"), (1, 28, 28), 7)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 7
    with pytest.raises(ValueError, match=r"model.arch must be .*'resnet18'.*got 'resnet'"):
        TorchvisionConfig(arch="resnet")


def test_a_custom_model_is_built_with_instantiate():
    from emergence_lab.models.custom import CustomModelConfig

    model = build_model(CustomModelConfig(_target_="tests.fixtures.custom_net.ResidualMLP",
                                          kwargs={"width": 5, "blocks": 3}), (1, 4, 4), 3)
    assert model.head.in_features == 5 and len(model.fcs) == 3
    m = measure_emergence(model, torch.rand(8, 1, 4, 4))
    assert list(m.layers) == ["relu", "relu:2", "relu:3", "relu:4"]  # four torch.relu calls
    with pytest.raises(ValueError, match="model=custom needs model._target_"):
        CustomModelConfig()


def _with_activation() -> list[str]:
    from dataclasses import fields

    from emergence_lab.models import MODELS

    return [e.name for e in MODELS if "activation" in {f.name for f in fields(e.settings)}]


def test_the_mlp_and_the_cnn_have_an_activation_setting():
    assert {"mlp", "cnn"} <= set(_with_activation())


@pytest.mark.parametrize("model", _with_activation())
def test_the_activation_is_a_yaml_setting_and_its_units_are_counted(model):
    from emergence_lab.config import validate
    from emergence_lab.config.identity import identity_fields
    from emergence_lab.models import ACTIVATIONS
    from tests.conftest import compose_cfg

    cfg = validate(compose_cfg(["dataset=digits", f"model={model}", "model.activation=tanh"]))
    net = build_model(cfg.model, (1, 8, 8), 10)
    tanh = [n for n, m in net.named_modules() if isinstance(m, nn.Tanh)]
    assert tanh and not any(isinstance(m, nn.ReLU) for m in net.modules())
    x = torch.randn(16, 1, 8, 8)
    layers = unit_graph(net, x[:1], ["hidden"]).layers
    assert sorted(layers) == sorted(tanh)  # every tanh output is a layer of counted units
    assert identity_fields(cfg)["model.activation"] == "tanh"  # a different run
    default = validate(compose_cfg(["dataset=digits", f"model={model}"]))
    assert "model.activation" not in identity_fields(default)  # relu: stored runs unchanged
    with pytest.raises(ValueError, match=re.escape(f"model.activation must be one of {sorted(ACTIVATIONS)}")):
        validate(compose_cfg(["dataset=digits", f"model={model}", "model.activation=swish"]))
