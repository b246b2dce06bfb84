"""The pruning strategies against independent references: torch.nn.utils.prune for magnitude
pruning, a float64 SynFlow ranking written here for deep ResNets, and the conventions (seeded
ties, non-finite scores, layers left dense) every strategy follows."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from emergence_lab.config import validate
from emergence_lab.models.cnn import CNN
from emergence_lab.models.mlp import MLP
from emergence_lab.prune.base import STRATEGIES, check_ignore, prunable_modules, prunable_weights
from emergence_lab.prune.masks import apply_pruning, current_masks, keep_top
from emergence_lab.run.preflight import build_network
from tests.conftest import compose_cfg


def _nets() -> list[nn.Module]:
    torch.manual_seed(0)
    return [MLP(in_shape=(1, 8, 8), num_classes=10, hidden=[48, 32]),
            CNN(in_shape=(1, 12, 12), num_classes=10, channels=[6, 8], hidden=[24], kernel_size=3)]


def _settings(name: str, amount: float, **kw):
    return STRATEGIES[name].settings(name=name, amount=amount, **kw)


def _masks(m: nn.Module) -> list[torch.Tensor]:
    return [current_masks(m)[k].bool() for k in prunable_weights(m)]


def _torch_masks(m: nn.Module, amount: float, scope: str) -> list[torch.Tensor]:
    ref = copy.deepcopy(m)
    layers = prunable_modules(ref)
    if scope == "global":
        torch_prune.global_unstructured([(lin, "weight") for lin in layers],
                                        pruning_method=torch_prune.L1Unstructured, amount=amount)
    else:
        for lin in layers:
            torch_prune.l1_unstructured(lin, "weight", amount=amount)
    return [lin.weight_mask.bool() for lin in layers]


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("amount", [0.3, 0.5, 0.7])
def test_magnitude_masks_equal_torch_prune(scope, amount):
    """global: torch's global_unstructured with L1Unstructured; layerwise: l1_unstructured per
    layer. At most one entry apart (rounding), on an MLP and a CNN."""
    for net in _nets():
        expected = _torch_masks(net, amount, scope)
        apply_pruning(net, _settings("magnitude", amount, scope=scope), amount)
        differ = sum(int((a != b).sum()) for a, b in zip(_masks(net), expected, strict=True))
        assert differ <= 1, (type(net).__name__, scope, amount, differ)


def _linearized(model: nn.Module) -> nn.Module:
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in (*net.parameters(), *net.buffers()):
            if t.is_floating_point():
                t.abs_()
    return net


def _resnet56() -> nn.Module:
    c = validate(compose_cfg(["model=resnet20", "model.depth=56", "dataset=cifar10"]))
    return build_network(c, (3, 32, 32), 10, seed=0)


@pytest.mark.slow
def test_synflow_on_resnet56_ranks_in_float64_and_keeps_every_layer():
    """R passes float32's range on ResNet-56 (a float32 ranking would see only inf); one round
    equals a float64 ranking written here; the default 100 rounds at 90 % leave no layer at
    density 0 (the layer collapse SynFlow exists to avoid)."""
    model = _resnet56()
    net = _linearized(model)
    weights = prunable_weights(net)
    flow = net(torch.ones((1, 3, 32, 32), dtype=torch.float64)).sum()
    assert flow.item() > torch.finfo(torch.float32).max  # the test would not see the bug else
    grads = torch.autograd.grad(flow, list(weights.values()))
    scores = torch.cat([(w * g).detach().abs().flatten() for w, g
                        in zip(weights.values(), grads, strict=True)])
    assert torch.isfinite(scores).all()
    assert not torch.isfinite(scores.float()).any()  # what the float32 cast made of them
    keep = scores.numel() - round(0.9 * scores.numel())
    expected = torch.zeros(scores.numel(), dtype=torch.bool)
    expected[scores.argsort(descending=True)[:keep]] = True

    one = copy.deepcopy(model)
    apply_pruning(one, _settings("synflow", 0.9, iterations=1), 0.9)
    got = torch.cat([m.flatten() for m in _masks(one)])
    assert int((got != expected).sum()) == 0

    apply_pruning(model, _settings("synflow", 0.9), 0.9)
    density = {k: float(m.float().mean()) for k, m in zip(prunable_weights(model), _masks(model),
                                                           strict=True)}
    assert min(density.values()) > 0, [k for k, d in density.items() if d == 0]
    kept = sum(int(m.sum()) for m in _masks(model)) / scores.numel()
    assert kept == pytest.approx(0.1, abs=0.002)


def test_synflow_overflowing_float64_names_the_layer():
    """A flow past float64's range is an error naming where it overflows, never a mask."""
    torch.manual_seed(0)
    m = MLP(in_shape=(1, 8, 8), num_classes=10, hidden=[8] * 12)
    with torch.no_grad():
        for block in m.blocks:
            block[0].weight.fill_(1e30)  # (8 * 1e30)^l: past 1.8e308 at the 10th layer
    with pytest.raises(ValueError, match=r"pruning=synflow: the synaptic flow R overflows float64 "
                                         r"\(1.8e308\) at blocks.9.0 in round 1"):
        apply_pruning(m, _settings("synflow", 0.5, iterations=2), 0.5)


def test_a_non_finite_score_is_an_error_naming_the_layer():
    torch.manual_seed(0)
    m = MLP(in_shape=(1, 8, 8), num_classes=10, hidden=[32])
    with torch.no_grad():
        m.head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"pruning=magnitude: 1 of 320 scores of head.weight are "
                                         r"not finite"):
        apply_pruning(m, _settings("magnitude", 0.5), 0.5)


def test_ties_at_the_threshold_are_broken_by_the_seed():
    """All-equal scores: the count is exact, one seed gives one mask, another seed another."""
    scores = {"a.weight": torch.zeros(40), "b.weight": torch.zeros(60)}
    masks = {k: torch.ones_like(v) for k, v in scores.items()}

    def drop(seed: int) -> torch.Tensor:
        out = keep_top(scores, masks, 0.5, "global", tie_seed=seed)
        return torch.cat([out["a.weight"], out["b.weight"]])

    assert int((drop(0) == 0).sum()) == 50
    assert torch.equal(drop(0), drop(0))
    assert not torch.equal(drop(0), drop(1))
    # scores below the threshold always go; only the tied ones are drawn
    scores["a.weight"][:10] = -1.0
    for seed in range(5):
        assert (drop(seed)[:10] == 0).all()


def test_grasp_ties_reach_the_target_with_a_seeded_mask():
    """GraSP scores many weights exactly 0 (inputs that are 0 across the batch): the target
    sparsity is reached exactly and the same seed gives the same mask."""
    torch.manual_seed(0)
    x = torch.randn(32, 1, 8, 8)
    x[:, :, :, :4] = 0  # half the pixels carry nothing: their first-layer weights score 0
    y = torch.randint(0, 10, (32,))
    out = []
    for seed in (0, 0, 1):
        m = MLP(in_shape=(1, 8, 8), num_classes=10, hidden=[32])
        torch.manual_seed(1)
        m = MLP(in_shape=(1, 8, 8), num_classes=10, hidden=[32])
        apply_pruning(m, _settings("grasp", 0.5, samples=32), 0.5, seed=seed, data=(x, y))
        out.append(torch.cat([k.flatten() for k in _masks(m)]))
    assert int((~out[0]).sum()) == round(0.5 * out[0].numel())
    assert torch.equal(out[0], out[1])
    assert not torch.equal(out[0], out[2])


def _pruning_strategies() -> list[str]:
    return [e.name for e in STRATEGIES if e.prunes]


@pytest.mark.parametrize("name", _pruning_strategies())
def test_every_strategy_leaves_the_ignored_layers_dense(name):
    torch.manual_seed(0)
    m = MLP(in_shape=(1, 8, 8), num_classes=10, hidden=[32, 24])
    dense = "blocks.0.0.weight" if name == "structured" else "head.weight"  # the head keeps its units anyway
    p = _settings(name, 0.5, ignore=[dense], **({"scope": "layerwise"} if name == "structured" else {}))
    check_ignore(m, p)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    apply_pruning(m, p, 0.5, data=(x, y))
    masks = current_masks(m)
    assert masks[dense].all(), name
    pruned = [k for k in prunable_weights(m) if k != dense and not masks[k].all()]
    assert pruned, f"{name} pruned nothing else"


def test_an_ignore_pattern_that_matches_nothing_names_the_prunable_parameters():
    m = MLP(in_shape=(1, 8, 8), num_classes=10, hidden=[32])
    with pytest.raises(ValueError, match=r"pruning.ignore: 'fc.weight' matches no prunable parameter "
                                         r"of this model; they are \['blocks.0.0.weight', 'head.weight'\]"):
        check_ignore(m, _settings("magnitude", 0.5, ignore=["fc.weight"]))
    check_ignore(m, _settings("magnitude", 0.5, ignore=["head.*"]))


def test_ignore_is_checked_before_any_run_and_keeps_the_default_identity():
    from emergence_lab.config.identity import config_hash
    from emergence_lab.run.preflight import preflight

    base = ["dataset=digits", "pruning=magnitude", "trainer.epochs=6"]
    with pytest.raises(ValueError, match="matches no prunable parameter"):
        preflight(validate(compose_cfg([*base, "pruning.ignore=[fc.weight]"])), device=False)
    preflight(validate(compose_cfg([*base, "pruning.ignore=[head.weight]"])), device=False)
    default = validate(compose_cfg(base))
    assert config_hash(validate(compose_cfg([*base, "pruning.ignore=[]"]))) == config_hash(default)
    assert config_hash(validate(compose_cfg([*base, "pruning.ignore=[head.weight]"]))) != \
        config_hash(default)
