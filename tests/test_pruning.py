import pytest
import torch
from torch import nn

from emergence_lab.measure.probe import surviving_parameters
from emergence_lab.models.mlp import MLP
from emergence_lab.prune.base import STRATEGIES, PruningConfig
from emergence_lab.prune.masks import apply_pruning, sparsity
from emergence_lab.run.checkpoint import load_checkpoint, save_checkpoint


def prune(m: nn.Module, name: str, amount: float, scope: str = "global", seed: int = 0,
          data=None, **settings) -> None:
    """Prune `amount` of the remaining weights with the strategy's own settings dataclass."""
    p = STRATEGIES[name].settings(name=name, scope=scope, amount=amount, **settings)
    apply_pruning(m, p, amount, seed=seed, data=data)


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
    prune(m, "magnitude", 0.4, "global")  # 14 smallest: values 1..14
    assert sparsity(m) == pytest.approx(14 / 35)
    flat = torch.cat([w.flatten() for w in weights(m)])
    assert torch.equal(flat == 0, torch.arange(1, 36) <= 14)
    biases = 5 + 3
    assert surviving_parameters(m) == 35 - 14 + biases


def test_layerwise_prunes_each_layer_by_the_amount():
    m = model_with_known_weights()
    prune(m, "magnitude", 0.2, "layerwise")
    assert [(w == 0).sum().item() for w in weights(m)] == [4, 3]
    assert sparsity(m) == pytest.approx(7 / 35)


def test_amount_zero_registers_masks_and_prunes_nothing():
    m = model_with_known_weights()
    prune(m, "magnitude", 0.0)
    assert hasattr(m.head, "weight_mask")
    assert sparsity(m) == 0.0
    assert surviving_parameters(m) == sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name, amount, scope, message", [
    ("magnitude", 1.0, "global", r"pruning.amount must be in \[0, 1\), got 1.0"),
    ("magnitude", -0.1, "global", r"pruning.amount must be in \[0, 1\)"),
    ("lotery", 0.5, "global", r"pruning.name must be one of \['grasp', 'magnitude', .*got 'lotery'"),
    ("magnitude", 0.5, "blockwise", "pruning.scope must be one of"),
    ("structured", 0.5, "global", r"pruning.scope must be one of \['layerwise'\]"),
    ("none", 0.5, "global", "pruning.amount must be 0 with pruning=none"),
])
def test_bad_pruning_arguments(name, amount, scope, message):
    with pytest.raises(ValueError, match=message):
        prune(model_with_known_weights(), name, amount, scope)


def test_zeros_survive_optimizer_steps_and_a_checkpoint_round_trip(tmp_path):
    m = model_with_known_weights()
    prune(m, "magnitude", 0.5)
    zero_before = [w == 0 for w in weights(m)]
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    assert all(torch.equal(w == 0, z) for w, z in zip(weights(m), zero_before, strict=True))
    untrained = model_with_known_weights().head.weight * m.head.weight_mask
    assert not torch.equal(m.head.weight, untrained)  # it trained

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


def test_random_pruning_is_exact_and_reproducible():
    a, b = model_with_known_weights(), model_with_known_weights()
    prune(a, "random", 0.4, "global", seed=3)
    prune(b, "random", 0.4, "global", seed=3)
    assert sparsity(a) == pytest.approx(14 / 35)
    assert all(torch.equal(x == 0, y == 0) for x, y in zip(weights(a), weights(b), strict=True))
    c = model_with_known_weights()
    prune(c, "random", 0.4, "global", seed=4)
    assert not all(torch.equal(x == 0, y == 0) for x, y in zip(weights(a), weights(c), strict=True))
    # not the magnitude choice: some large weights go, some small ones stay
    flat = torch.cat([w.flatten() for w in weights(a)])
    assert (flat[:14] != 0).any()


def alive_of(model):
    """Which units of the first hidden layer the unit graph counts."""
    from emergence_lab.measure.graph import unit_graph

    graph = unit_graph(model, torch.zeros(1, 4))
    return graph.alive(model)[graph.layers["blocks.0.1"]]


def test_structured_removes_the_weakest_units_and_what_reads_them(tmp_path):
    m = model_with_known_weights()  # hidden layer 5 units; row i of fc1 has norm growing with i
    with torch.no_grad():
        m.blocks[0][0].weight[3] = 0.001  # unit 3: the weakest
        m.blocks[0][0].bias.fill_(0.5)
    prune(m, "structured", 0.4, "layerwise")  # round(0.4 * 5) = 2 units: 3 and 0
    fc1 = m.blocks[0][0]
    alive = alive_of(m)
    assert alive.tolist() == [False, True, True, False, True]
    assert (fc1.weight[~alive] == 0).all() and (fc1.bias[~alive] == 0).all()
    assert (m.head.weight[:, ~alive] == 0).all() and (m.head.weight[:, alive] != 0).all()
    assert surviving_parameters(m) == 3 * 4 + 3 + 3 * 3 + 3  # 3 units left: in, bias, out, head bias
    # output of a removed unit is exactly 0 whatever the input
    x = torch.randn(9, 4)
    hidden = m.blocks[0](x)
    assert (hidden[:, ~alive] == 0).all()
    save_checkpoint(tmp_path / "s.pt", m, None)
    fresh = MLP(in_shape=(4,), num_classes=3, hidden=[5])
    load_checkpoint(tmp_path / "s.pt", fresh)
    assert alive_of(fresh).tolist() == alive.tolist()
    assert torch.equal(fresh(x), m(x))


def test_iterative_schedule_reaches_the_amount():
    from emergence_lab.prune.schedules import schedule

    steps = schedule(PruningConfig("magnitude", 0.7, epoch=5, steps=3, interval=2))
    assert [e for e, _ in steps] == [5, 7, 9]
    rate = steps[0][1]
    assert (1 - rate) ** 3 == pytest.approx(0.3)
    assert schedule(PruningConfig("magnitude", 0.5, epoch=2)) == [(2, 0.5)]
    assert schedule(PruningConfig("none", 0.0)) == []
    m = MLP(in_shape=(20,), num_classes=10, hidden=[50])  # 1500 weights
    for _, r in steps:
        prune(m, "magnitude", r)
    assert sparsity(m) == pytest.approx(0.7, abs=2e-3)


def _two_layer(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(in_shape=(6,), num_classes=3, hidden=[5])


def _kept(m: MLP) -> list[torch.Tensor]:
    return [w != 0 for w in weights(m)]


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_magnitude_masks_equal_torch_prunes_over_two_steps(scope):
    from torch.nn.utils import prune as torch_prune

    ours, ref = _two_layer(), _two_layer()
    params = [(ref.blocks[0][0], "weight"), (ref.head, "weight")]
    for rate in (0.4, 0.5):
        prune(ours, "magnitude", rate, scope)
        if scope == "global":
            torch_prune.global_unstructured(params, torch_prune.L1Unstructured, amount=rate)
        else:
            for mod, name in params:
                torch_prune.l1_unstructured(mod, name, amount=rate)
    assert [torch.equal(a, b) for a, b in zip(_kept(ours), _kept(ref), strict=True)] == [True, True]


def _batch(n: int = 32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _top_kept(scores: list[torch.Tensor], keep: int) -> list[torch.Tensor]:
    flat = torch.cat([s.flatten() for s in scores])
    threshold = flat.sort(descending=True).values[keep - 1]
    return [s >= threshold for s in scores]


def test_snip_keeps_the_largest_gradient_times_weight_on_its_batch():
    from emergence_lab.prune.masks import training_batch

    m = _two_layer()
    x, y = _batch()
    batch = training_batch(x, y, 16, seed=0)  # what apply_pruning draws with seed 0
    loss = nn.functional.cross_entropy(m(batch.x), batch.y)
    grads = torch.autograd.grad(loss, weights(m))
    expected = _top_kept([(g * w).abs() for g, w in zip(grads, weights(m), strict=True)], 45 - 18)
    prune(m, "snip", 0.4, data=(x, y), samples=16)
    assert [torch.equal(a, b) for a, b in zip(_kept(m), expected, strict=True)] == [True, True]


def test_grasp_keeps_the_weights_with_the_largest_w_times_hessian_gradient():
    from emergence_lab.prune.masks import training_batch

    m = _two_layer()
    x, y = _batch()
    batch = training_batch(x, y, 16, seed=0)
    ws = weights(m)

    def loss_of(*w):  # the loss as a function of the two weight matrices, logits / 200
        h = torch.relu(batch.x @ w[0].T + m.blocks[0][0].bias)
        return nn.functional.cross_entropy((h @ w[1].T + m.head.bias) / 200, batch.y)

    g = torch.autograd.grad(loss_of(*ws), ws)
    _, hg = torch.autograd.functional.vhp(loss_of, tuple(w.detach() for w in ws), g)
    expected = _top_kept([w.detach() * h for w, h in zip(ws, hg, strict=True)], 45 - 18)
    prune(m, "grasp", 0.4, data=(x, y), samples=16)
    assert [torch.equal(a, b) for a, b in zip(_kept(m), expected, strict=True)] == [True, True]


def test_synflow_scores_the_path_sums_of_absolute_weights():
    """One round on a 2-layer net: R = sum_k sum_j |w2_kj| (sum_i |w1_ji| + |b1_j|) + sum |b2|,
    so a first-layer weight scores |w1_ji| * sum_k |w2_kj|, a second-layer one |w2_kj| * h_j."""
    m = _two_layer()
    w1, w2, b1 = (t.detach().abs() for t in (m.blocks[0][0].weight, m.head.weight, m.blocks[0][0].bias))
    h = w1.sum(1) + b1
    expected = _top_kept([w1 * w2.sum(0)[:, None], w2 * h[None, :]], 45 - 18)
    prune(m, "synflow", 0.4, iterations=1)
    assert [torch.equal(a, b) for a, b in zip(_kept(m), expected, strict=True)] == [True, True]
    many = _two_layer()
    prune(many, "synflow", 0.4, iterations=10)
    assert sparsity(many) == pytest.approx(18 / 45, abs=1 / 45)


def test_cubic_schedule_follows_zhu_and_gupta():
    from emergence_lab.prune.schedules import schedule

    events = schedule(PruningConfig("magnitude", 0.8, epoch=2, schedule="cubic", steps=4, interval=2))
    assert [e for e, _ in events] == [2, 4, 6, 8]
    remaining, reached = 1.0, []
    for _, rate in events:
        remaining *= 1 - rate
        reached.append(1 - remaining)
    assert reached == pytest.approx([0.8 * (1 - (1 - t / 4) ** 3) for t in (1, 2, 3, 4)])
    m = MLP(in_shape=(20,), num_classes=10, hidden=[50])
    for _, rate in events:
        prune(m, "magnitude", rate)
    assert sparsity(m) == pytest.approx(0.8, abs=2e-3)


def test_ticket_shuffle_keeps_each_layers_count_at_other_places():
    ticket, shuffled = _two_layer(), _two_layer()
    prune(ticket, "magnitude", 0.5)
    prune(shuffled, "ticket_shuffle", 0.5, seed=1)
    assert [int(k.sum()) for k in _kept(shuffled)] == [int(k.sum()) for k in _kept(ticket)]
    assert not all(torch.equal(a, b) for a, b in zip(_kept(shuffled), _kept(ticket), strict=True))


def test_a_strategy_never_revives_a_pruned_weight():
    m = _two_layer()
    prune(m, "magnitude", 0.5)
    before = _kept(m)
    prune(m, "random", 0.3, seed=5)
    assert all((~b & a).sum() == 0 for a, b in zip(_kept(m), before, strict=True))


def chain_structured(model, rate):
    """The chain-only structured pruning this project had before Torch-Pruning (reference)."""
    from emergence_lab.prune.base import prunable_modules, prunable_weights
    from emergence_lab.prune.masks import current_masks

    out = current_masks(model)
    keys, mods = list(prunable_weights(model)), prunable_modules(model)
    for key, layer, nxt_key in zip(keys[:-1], mods[:-1], keys[1:], strict=True):
        w = layer.weight.detach()
        alive = out[key].flatten(1).any(dim=1)
        norms = w.abs().flatten(1).sum(1).masked_fill(~alive, -1.0)
        k = min(round(rate * int(alive.sum())), int(alive.sum()) - 1)
        alive = alive.clone()
        alive[norms.argsort()[: k + int((~alive).sum())]] = False
        out[key] = out[key] * alive.view((w.shape[0],) + (1,) * (w.dim() - 1)).to(w.dtype)
        out[key.removesuffix("weight") + "bias"] = alive.to(w.dtype)
        reads = out[nxt_key].clone()
        reads.view(reads.shape[0], w.shape[0], -1)[:, ~alive, :] = 0
        out[nxt_key] = reads
    return out


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_structured_on_a_chain_removes_what_the_chain_code_removed(arch):
    from emergence_lab.models.cnn import CNN
    from emergence_lab.prune.masks import current_masks

    torch.manual_seed(1)
    m = (MLP(in_shape=(1, 6, 6), num_classes=3, hidden=[12, 7]) if arch == "mlp"
         else CNN(in_shape=(1, 8, 8), num_classes=3, channels=[5, 6], hidden=[9]))
    expected = chain_structured(m, 0.4)
    prune(m, "structured", 0.4, "layerwise")
    got = current_masks(m)
    units = {k for k in got if k.endswith(".units")}  # which units it removed, for emergence
    assert set(got) - units == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    for k in units:  # the removed units are the rows whose weights and bias all went
        layer = k.removesuffix(".units")
        rows = got[f"{layer}.weight"].flatten(1).any(1) | got[f"{layer}.bias"].bool()
        assert torch.equal(got[k].bool(), rows)


def test_structured_on_a_resnet_removes_coupled_channels_together():
    from emergence_lab.measure.graph import unit_graph
    from emergence_lab.models.resnet import ResNet

    torch.manual_seed(0)
    m = ResNet((3, 8, 8), 4, depth=8, width=4)
    prune(m, "structured", 0.5, "layerwise")
    graph = unit_graph(m, torch.zeros(1, 3, 8, 8))
    alive = graph.alive(m)
    units = {name: alive[i] for name, i in graph.layers.items()}
    # The residual stream of a segment is one coupled group: the stem's relu, each block's sum
    # and the shortcut conv lose the same channels, so the sums carry nothing through them.
    stream = [units["relu"], units["blocks.0/relu:2"]]
    assert int(stream[0].sum()) == 2 and torch.equal(stream[0], stream[1])
    x = torch.randn(5, 3, 8, 8)
    m.eval()
    feats = m.blocks[0](torch.relu(m.bn(m.conv(x))))
    assert (feats[:, ~stream[1]] == 0).all() and (feats[:, stream[1]] != 0).any()
    assert (m.bn.weight[~stream[0]] == 0).all() and (m.bn.bias[~stream[0]] == 0).all()
    assert (m.fc.weight[:, ~units["blocks.2/relu:2"]] == 0).all()
    # every hidden unit layer lost half of its channels (one group per segment, one per block)
    assert all(int(a.sum()) == a.numel() // 2 for a in units.values())
