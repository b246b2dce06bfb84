"""Claims that can fail: the plateau claim on synthetic tables whose right verdict is known by
construction (a clock-only signal, E at zero while accuracy climbs, E at each run's own
plateau); a claim added from outside. The other claims' cases: test_claim_cases.py."""

from __future__ import annotations

import math

import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.report import verdicts
from emergence_lab.report.table import common_target_epochs

EPOCHS, PE = 20, 2


def _plateau_curve(plateau: int, start: float = 0.5, slope: float = 0.03) -> list[float]:
    """Accuracy that climbs `slope` an epoch until `plateau`, then stays."""
    return [start + slope * min(e, plateau) for e in range(EPOCHS + 1)]


def _tables(runs: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per_run, hist) from runs given as {seed, level, acc: [...], e: [...]}."""
    rows, hist = [], []
    for i, r in enumerate(runs):
        rid = f"r{i}"
        rows.append({"run_id": rid, "name": f"run{i}", "group": "g", "seed": r["seed"],
                     "level": r.get("level", 0.0), "strategy": r.get("strategy", "magnitude"),
                     "label": f"{r.get('level', 0.0):.0%}", "prune_epoch": PE,
                     "last_epoch": EPOCHS})
        for key, values in ((mk.TEST_ACC, r["acc"]), (mk.E, r["e"])):
            hist += [(rid, key, step, float(v)) for step, v in enumerate(values)]
    return pd.DataFrame(rows), pd.DataFrame(hist, columns=["run_id", "key", "step", "value"])


def _plateau_verdict(runs: list[dict]) -> pd.Series:
    per_run, hist = _tables(runs)
    return verdicts.claim_tests(per_run, hist, which=["E_zero_beats_clock"]).iloc[0]


def _two_runs_per_seed(seeds: int, e_of) -> list[dict]:
    """Each seed: an early and a late plateau (epochs differ between runs and seeds)."""
    out = []
    for seed in range(seeds):
        for level, plateau in ((0.0, 5 + seed % 3), (0.5, 13 + seed % 4)):
            out.append({"seed": seed, "level": level, "acc": _plateau_curve(plateau),
                        "e": e_of(plateau)})
    return out


def test_a_signal_that_is_only_the_epoch_number_is_never_supported():
    """E = 100 - 10 epoch, the same in every run: it stops where the clock stops."""
    clock = [max(0.0, 100 - 10 * e) for e in range(EPOCHS + 1)]
    row = _plateau_verdict(_two_runs_per_seed(6, lambda plateau: clock))
    assert row.verdict != "supported"
    assert row["mean"] >= 0


def test_e_at_zero_while_accuracy_still_gains_two_points_is_contradicted():
    """E = 0 from epoch 3 on while the accuracy climbs to epoch 15 (>= 2 points still to come)."""
    runs = []
    for seed in range(6):
        acc = [a + 0.002 * seed for a in _plateau_curve(15, slope=0.01)]
        e = [100.0] * 3 + [0.0] * (EPOCHS - 2)
        runs += [{"seed": seed, "level": lv, "acc": acc, "e": e} for lv in (0.0, 0.5)]
    left = 100 * (_plateau_curve(15, slope=0.01)[-1] - _plateau_curve(15, slope=0.01)[3])
    assert left >= 2
    row = _plateau_verdict(runs)
    assert row.verdict == "contradicted", row


def test_e_reaching_zero_at_each_runs_own_plateau_is_supported():
    def e_of(plateau: int) -> list[float]:
        return [max(0.0, 100.0 * (plateau - e)) for e in range(EPOCHS + 1)]

    row = _plateau_verdict(_two_runs_per_seed(6, e_of))
    assert row.verdict == "supported", row
    assert row["mean"] < 0


def test_runs_where_e_never_gets_near_zero_are_named_not_dropped_silently():
    def e_of(plateau: int) -> list[float]:
        return [max(0.0, 100.0 * (plateau - e)) for e in range(EPOCHS + 1)]

    runs = _two_runs_per_seed(6, e_of)
    runs[3]["e"] = [50.0 + e for e in range(EPOCHS + 1)]  # never near zero
    per_run, hist = _tables(runs)
    assert verdicts.never_near_zero(per_run, hist) == ["run3"]
    effects = verdicts.plateau_effects(per_run, hist)
    assert math.isnan(effects.iloc[3]) and effects.drop(3).notna().all()


# ---- the censored epochs to the control's level, still a column of the tables ----

def test_a_run_that_never_reaches_the_target_counts_past_its_horizon():
    acc = pd.Series([0.5, 0.6, 0.7, 0.7])
    assert common_target_epochs(acc, 0.8, 1, 3) == (3.0, True)
    assert common_target_epochs(acc, 0.7, 1, 3) == (1.0, False)
    assert math.isnan(common_target_epochs(acc, math.nan, 1, 3)[0])


def test_adding_a_claim_is_one_entry(monkeypatch):
    """A claim registered from outside (one CLAIMS.add) is tested, corrected and tabled."""
    from emergence_lab.report import claims

    monkeypatch.setattr(claims.CLAIMS, "_entries", dict(claims.CLAIMS._entries))
    claims.CLAIMS.add(claims.Claim(
        "keeps_train_accuracy", "Pruning keeps the final training accuracy", +1, "points",
        lambda g, h, e, r: claims.vs_control(g, g.final_acc.astype(float), scale=100),
        "final accuracy at least the control's"))
    claims.CLAIMS.add(claims.Claim(
        "loses_train_accuracy", "Pruning loses final training accuracy", -1, "points",
        lambda g, h, e, r: claims.vs_reference(g, g.final_acc.astype(float), scale=100)))
    rows = []
    for seed in range(4):
        for level, acc in ((0.0, 0.8), (0.5, 0.82 + 0.001 * seed)):
            rows.append({"run_id": f"{level}-{seed}", "group": "g", "seed": seed, "level": level,
                         "strategy": "magnitude" if level else "none", "label": f"{level:.0%}",
                         "prune_epoch": PE, "final_acc": acc})
    t = verdicts.claim_tests(pd.DataFrame(rows), pd.DataFrame(columns=["run_id", "key", "step",
                                                                       "value"]),
                             which=["keeps_train_accuracy", "loses_train_accuracy"]
                             ).set_index("claim")
    assert t.loc["keeps_train_accuracy", "verdict"] == "supported"
    assert t.loc["loses_train_accuracy", "verdict"] == "contradicted"
    assert t.loc["keeps_train_accuracy", "p_holm"] >= t.loc["keeps_train_accuracy", "p"]


def test_the_papers_own_number_stands_beside_costs_accuracy():
    from emergence_lab.report.views import paper_numbers

    summary = pd.DataFrame([
        {"group": "g", "label": "control", "level": 0.0, "paper_final_acc": 0.863},
        {"group": "g", "label": "30%", "level": 0.3, "paper_final_acc": 0.870},
        {"group": "g", "label": "70%", "level": 0.7, "paper_final_acc": 0.862},
        {"group": "h", "label": "control", "level": 0.0, "paper_final_acc": math.nan}])
    got = paper_numbers(summary)
    assert got[("g", "30%")] == "+0.7 points" and got[("g", "70%")] == "-0.1 points"
    assert got[("g", "all levels")] == "+0.3 points"
    assert not any(k[0] == "h" for k in got)  # not the paper's protocol: nothing beside it


def test_the_papers_cnn_number_stands_beside_ours_and_what_the_layers_allow():
    from emergence_lab.report.views import paper_cnn_table

    per_run = pd.DataFrame([{"group": "g", "model": "cnn", "dataset": "cifar10", "E_epoch_1": e,
                             "E_max": 270_336.0} for e in (1000.0, 1200.0)])
    row = paper_cnn_table(per_run, "g").iloc[0]
    assert row["E at epoch 1 (paper)"] == "634,398"
    assert row["largest E these counted layers allow"] == "270,336"
    assert row["E at epoch 1 (ours)"].startswith("1100 ± ")
    assert "more than these layers allow" in row.note
    assert paper_cnn_table(per_run.assign(model="mlp"), "g").empty
