import pytest
import torch
from torch import nn

from emergence_lab.checkpoint import load_checkpoint, save_checkpoint
from emergence_lab.models import MLP
from emergence_lab.pruning import apply_pruning, sparsity, surviving_parameters


def model_with_known_weights() -> MLP:
    """4 -> 5 -> 3 classes; weights 1..n by position so magnitudes are all distinct."""
    torch.manual_seed(0)
    m = MLP(in_shape=(4,), num_classes=3, hidden=[5])
    with torch.no_grad():
        start = 1.0
        for lin in (m.blocks[0][0], m.head):
            n = lin.weight.numel()
            lin.weight.copy_(torch.arange(start, start + n).view_as(lin.weight))
            start += n
    return m


def weights(m: MLP) -> list[torch.Tensor]:
    return [m.blocks[0][0].weight, m.head.weight]


def test_global_magnitude_prunes_the_smallest_exactly():
    m = model_with_known_weights()  # 20 + 15 = 35 weights, values 1..35
    apply_pruning(m, "magnitude", 0.4, "global")  # 14 smallest: values 1..14
    assert sparsity(m) == pytest.approx(14 / 35)
    flat = torch.cat([w.flatten() for w in weights(m)])
    assert torch.equal(flat == 0, torch.arange(1, 36) <= 14)
    biases = 5 + 3
    assert surviving_parameters(m) == 35 - 14 + biases


def test_layerwise_prunes_each_layer_by_the_amount():
    m = model_with_known_weights()
    apply_pruning(m, "magnitude", 0.2, "layerwise")
    assert [(w == 0).sum().item() for w in weights(m)] == [4, 3]
    assert sparsity(m) == pytest.approx(7 / 35)


def test_amount_zero_registers_masks_and_prunes_nothing():
    m = model_with_known_weights()
    apply_pruning(m, "magnitude", 0.0)
    assert hasattr(m.head, "weight_mask")
    assert sparsity(m) == 0.0
    assert surviving_parameters(m) == sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name, amount, scope, message", [
    ("magnitude", 1.0, "global", r"pruning.amount must be in \[0, 1\), got 1.0"),
    ("magnitude", -0.1, "global", r"pruning.amount must be in \[0, 1\)"),
    ("lottery", 0.5, "global",
     r"pruning.name must be one of \['magnitude', 'none', 'random', 'structured'\], got 'lottery'"),
    ("magnitude", 0.5, "blockwise", "pruning.scope must be one of"),
    ("none", 0.5, "global", "takes amount 0"),
])
def test_bad_pruning_arguments(name, amount, scope, message):
    with pytest.raises(ValueError, match=message):
        apply_pruning(model_with_known_weights(), name, amount, scope)


def test_zeros_survive_optimizer_steps_and_a_checkpoint_round_trip(tmp_path):
    m = model_with_known_weights()
    apply_pruning(m, "magnitude", 0.5)
    zero_before = [w == 0 for w in weights(m)]
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    assert all(torch.equal(w == 0, z) for w, z in zip(weights(m), zero_before, strict=True))
    assert not torch.equal(m.head.weight_orig, model_with_known_weights().head.weight)  # it trained

    save_checkpoint(tmp_path / "ck.pt", m, opt, epoch=5)
    fresh = MLP(in_shape=(4,), num_classes=3, hidden=[5])
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    payload = load_checkpoint(tmp_path / "ck.pt", fresh, fresh_opt)  # weights_only=True inside
    assert payload["epoch"] == 5
    assert all(torch.equal(w == 0, z) for w, z in zip(weights(fresh), zero_before, strict=True))
    assert torch.equal(fresh(x), m(x))
    assert sparsity(fresh) == pytest.approx(sparsity(m))
    # the restored optimizer continues exactly like the original
    for model, o in ((m, opt), (fresh, fresh_opt)):
        o.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        o.step()
    assert torch.equal(fresh(x), m(x))
    assert all(torch.equal(w == 0, z) for w, z in zip(weights(fresh), zero_before, strict=True))
