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
    with pytest.raises(ValueError, match=r"model.name must be one of \['cnn', 'mlp'\], got 'resnet'"):
        build_model("resnet", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="unknown unit layers"):
        toy_mlp().unit_layers(["hidden", "attention"])
