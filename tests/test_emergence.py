import itertools
import math
import random

import pytest
import torch

from emergence_lab.measure.formula import emergence, relative_emergence
from emergence_lab.measure.rules import RULES
from emergence_lab.measure.stats import layer_stats


def unit_activity(acts, theta, rule="mean", min_fraction=0.5):
    """The rule `rule` on the statistics of (samples, units) activations, every unit alive."""
    stats = layer_stats(acts, torch.ones(acts.shape[-1], dtype=torch.bool),
                        fractions=(0.3, 0.5))
    return RULES[rule].active(stats, theta, min_fraction)


def brute_force(sizes, active):
    """The definition, term by term: sum_{i<j} (n_i - a_i) a_j prod_{i<k<j} n_k."""
    return sum((sizes[i] - active[i]) * active[j] * math.prod(sizes[i + 1:j])
               for i, j in itertools.combinations(range(len(sizes)), 2))


def test_worked_example():
    assert emergence([4, 3, 2], [2, 2, 1]) == 11


def test_hand_computed_two_layers():
    # 3 inactive units of the first layer, each to 2 active units of the second.
    assert emergence([5, 4], [2, 2]) == 6


@pytest.mark.parametrize("sizes", [[4, 3, 2], [512, 256], [7, 1, 9, 3]])
def test_all_or_none_active_is_zero(sizes):
    assert emergence(sizes, sizes) == 0
    assert emergence(sizes, [0] * len(sizes)) == 0


def test_matches_definition_on_random_networks():
    rng = random.Random(0)
    for _ in range(200):
        sizes = [rng.randint(0, 12) for _ in range(rng.randint(2, 6))]
        active = [rng.randint(0, n) for n in sizes]
        assert emergence(sizes, active) == brute_force(sizes, active)


def test_exact_beyond_int64():
    sizes = [4096] * 8
    active = [2048] * 8
    e = emergence(sizes, active)
    assert e > 2**63
    assert e == brute_force(sizes, active)
    assert isinstance(e, int)


@pytest.mark.parametrize("sizes, active, message", [
    ([4, 3], [5, 1], "exceeds the layer size"),
    ([4, -3], [1, 1], ">= 0"),
    ([4, 3], [1, -1], ">= 0"),
    ([4, 3, 2], [1, 1], "differ in length"),
    ([4], [1], "at least 2"),
    ([4.5, 3], [1, 1], "integers"),
])
def test_bad_input(sizes, active, message):
    with pytest.raises(ValueError, match=message):
        emergence(sizes, active)


def test_relative_emergence():
    assert relative_emergence(11, 4) == 2.75
    with pytest.raises(ValueError, match="n_params"):
        relative_emergence(11, 0)


def test_unit_activity_mean_and_fraction():
    acts = torch.tensor([[0.0, 0.2, 0.04, 1.0],
                         [0.0, 0.0, 0.04, 1.0],
                         [0.0, 0.0, 0.10, 0.0]])
    # means: 0, 0.0667, 0.06, 0.6667
    assert unit_activity(acts, 0.05, "mean").tolist() == [False, True, True, True]
    # share of samples above 0.05: 0, 1/3, 1/3, 2/3
    assert unit_activity(acts, 0.05, "fraction", 0.5).tolist() == [False, False, False, True]
    assert unit_activity(acts, 0.05, "fraction", 0.3).tolist() == [False, True, True, True]
    # tau-dormant: mean |output| 0, 0.0667, 0.06, 0.6667 over their mean 0.1983
    assert unit_activity(acts, 0.5, "dormant").tolist() == [False, False, False, True]
    assert unit_activity(acts, 0.31, "dormant").tolist() == [False, True, False, True]  # 0.336, 0.3025
    with pytest.raises(ValueError, match=r"threshold.rule must be one of \['dormant', 'fraction', "
                                         r"'mean'\], got 'median'"):
        RULES["median"]
    with pytest.raises(ValueError, match="samples, units"):
        unit_activity(acts[0], 0.05)


def test_counts_metrics():
    from emergence_lab.measure.probe import Emergence, counts_metrics

    m = counts_metrics(Emergence(11, 0.5, {"h1": (4, 2), "h2": (3, 2), "h3": (2, 1)}))
    assert m["emergence/E"] == 11.0
    assert m["emergence/relative"] == pytest.approx(0.5)
    assert m["emergence/active_frac/h2"] == pytest.approx(2 / 3)

def test_stop_epoch():
    from emergence_lab.measure.formula import stop_epoch

    history = [(1, 50.0), (2, 0.0), (3, 0.0), (4, 3.0), (5, 0.0), (6, 0.0), (7, 0.0), (8, 0.0)]
    assert stop_epoch(history, epsilon=0.0, patience=3) == 7
    assert stop_epoch(history, epsilon=0.0, patience=2) == 3
    assert stop_epoch(history, epsilon=3.0, patience=4) == 5  # 2..5 are all <= 3
    assert stop_epoch(history, epsilon=0.0, patience=5) is None
    assert stop_epoch([], epsilon=0.0, patience=1) is None


def test_sparsity_baselines_by_hand():
    from emergence_lab.measure.baselines import sparsity_baselines

    # layer a: unit 0 never fires (dead, dormant at every tau), unit 1 fires on one of two
    # samples, unit 2 on both. Mean |output| per unit: 0, 0.5, 2; layer mean 2.5/3, so the
    # scores are 0, 0.6, 2.4. Layer b: one unit, score 1.
    acts = {"a": torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 2.0]]), "b": torch.tensor([[3.0], [1.0]])}
    out = sparsity_baselines(acts, taus=(0.0, 0.5, 0.7))
    assert out["sparsity/dead_frac"] == 1 / 4
    assert out["sparsity/zero_frac"] == 3 / 8
    assert out["sparsity/dormant_frac/0"] == 1 / 4
    assert out["sparsity/dormant_frac/0.5"] == 1 / 4
    assert out["sparsity/dormant_frac/0.7"] == 2 / 4
    with pytest.raises(ValueError, match="samples, units"):
        sparsity_baselines({"a": torch.zeros(3)})


def test_the_largest_e_layers_allow_is_the_brute_force_maximum():
    """Over every choice of active counts (E is linear in each, so all-or-nothing layers
    suffice, checked here against every count on the smallest cases too)."""
    from emergence_lab.measure.formula import max_emergence

    assert max_emergence([32, 64, 128]) == 270_336  # the paper's CNN as we assume it
    assert max_emergence([4, 3, 2]) == max(
        emergence([4, 3, 2], a) for a in itertools.product(range(5), range(4), range(3)))
    rng = random.Random(0)
    for _ in range(200):
        n = [rng.randint(0, 9) for _ in range(rng.randint(2, 7))]
        brute = max(emergence(n, [x * k for x, k in zip(c, n, strict=True)])
                    for c in itertools.product([0, 1], repeat=len(n)))
        assert max_emergence(n) == brute, n
    with pytest.raises(ValueError, match="at least 2"):
        max_emergence([5])
