"""The report's further tables on small tables built by hand (no store)."""

import math

import pandas as pd
import pytest

from emergence_lab.report import analyses, verdicts


def hist_of(curves):
    """Long metric history from {run_id: {key: [values by epoch from 0]}}."""
    return pd.DataFrame([(rid, key, step, v) for rid, keys in curves.items()
                         for key, values in keys.items() for step, v in enumerate(values)],
                        columns=["run_id", "key", "step", "value"])


def test_stoppers_fire_where_worked_out_by_hand():
    per_run = pd.DataFrame([{"run_id": "r", "name": "r", "label": "50%", "seed": 0,
                             "final_from": 1}])
    hist = hist_of({"r": {
        "test/acc": [0.1, 0.5, 0.6, 0.7, 0.72, 0.73, 0.74, 0.75],
        "emergence/E": [9, 9, 5, 0, 0, 0, 0, 0],  # <= 0 from epoch 3: 3 in a row at epoch 5
        "test/loss": [2, 1, 0.8, 0.7, 0.75, 0.71, 0.72, 0.6],  # best 0.7 at 3; 3 worse by 6
        "train/loss": [2, 1, 0.9, 0.899, 0.898, 0.8975, 0.5, 0.4]}})  # < 1 % from 3 to 5
    t = analyses.stopping_comparison(per_run, hist, epsilon=0.0, patience=3).set_index("stopper")
    assert t.loc["E stopper", "fires_at"] == 5
    assert t.loc["E stopper", "epochs_saved"] == 2
    assert t.loc["E stopper", "acc_given_up_pts"] == pytest.approx(2.0)  # 0.75 - 0.73
    assert t.loc["test-loss patience", "fires_at"] == 6
    assert t.loc["train-loss plateau", "fires_at"] == 5
    wide = analyses.stopping_by_run(t.reset_index())
    assert wide.loc[0, "E stopper"] == "5 (−2, +2.00 pts)"


def test_calibration_ranks_settings_by_their_largest_gap():
    rows = []
    for bs, off in ((64, 3.0), (16, 0.5)):  # batch 16 lands 0.5 points from every number
        for level, paper in ((0.0, 86.3), (0.3, 87.0), (0.5, 86.8), (0.7, 86.2)):
            rows.append({"paper_protocol": True, "batch_size": bs, "momentum": 0.0,
                         "normalize": "False", "dataset": "fashion_mnist", "seed": 0,
                         "level": level, "final_acc": (paper - off) / 100,
                         "acc_epoch_5": (82.0 - off) / 100, "train_final_acc": (paper + off) / 100,
                         "train_acc_epoch_5": 82.0 / 100})
    t = analyses.calibration(pd.DataFrame(rows))
    assert list(t["batch size"]) == [16, 64]
    assert t.loc[0, "max gap test (pts)"] == pytest.approx(0.5)
    assert t.loc[0, "within 2 pts (test)"] and not t.loc[1, "within 2 pts (test)"]
    assert t.loc[1, "max gap train (pts)"] == pytest.approx(3.0)
    assert t.loc[0, "numbers compared"] == 5  # epoch 5 and four finals


def test_each_level_at_its_best_lr_against_the_control_at_its_best():
    rows = []
    for seed in range(3):
        for label, level, by_lr in (("control", 0.0, {0.005: 0.84, 0.01: 0.85}),
                                    ("50%", 0.5, {0.005: 0.80, 0.01: 0.83})):
            for lr, acc in by_lr.items():
                rows.append({"base_group": "g", "label": label, "level": level, "seed": seed,
                             "lr_after": lr, "final_acc": acc - 0.001 * seed * (lr == 0.01) * level,
                             "order": (level > 0, "", level)})
    t = verdicts.best_lr(pd.DataFrame(rows))
    row = t.iloc[0]
    assert (row.best_lr, row.control_best_lr) == (0.01, 0.01)
    # 0.83 - 0.0005 s - 0.85 over seeds 0, 1, 2: -2.0, -2.05, -2.1 points
    assert row["mean"] == pytest.approx(-2.05) and row.n == 3
    assert verdicts.best_lr(pd.DataFrame(rows).assign(lr_after=0.005)).empty


def test_sensitivity_recomputes_the_E_claims_at_each_threshold():
    per_run, curves = [], {}
    for seed in range(3):
        for level in (0.0, 0.5):
            rid = f"{level}-{seed}"
            per_run.append({"run_id": rid, "group": "g", "seed": seed, "level": level,
                            "strategy": "control" if level == 0 else "magnitude",
                            "label": "control" if level == 0 else "50%", "prune_epoch": 1,
                            "final_from": 1,
                            "final_acc": 0.8, "epochs_to_common_target": 2.0})
            # at theta 0.1 pruning lowers E by about half; at theta 0 it raises it
            low = [10, 10, 5 + seed * 0.1, 5] if level else [10, 10, 10 + seed * 0.3, 10]
            high = [10, 10, 20 + seed, 20] if level else [10, 10, 10, 10]
            curves[rid] = {"emergence/E_theta/0.1": low, "emergence/relative_theta/0.1": low,
                           "emergence/E_theta/0": high, "emergence/relative_theta/0": high,
                           "test/acc": [0.1, 0.5, 0.7, 0.8]}
    keys = {"mean θ=0.1": ("emergence/E_theta/0.1", "emergence/relative_theta/0.1"),
            "mean θ=0": ("emergence/E_theta/0", "emergence/relative_theta/0")}
    t = verdicts.sensitivity(pd.DataFrame(per_run), hist_of(curves), keys)
    lowers = t[t.claim == "lowers_E"].set_index("setting")
    assert lowers.loc["mean θ=0.1", "verdict"] == "supported"
    assert lowers.loc["mean θ=0", "verdict"] == "contradicted"
    # the ratio of E summed over epochs 2 and 3 (+1), pruned over control, per seed, then the
    # mean over seeds on the log scale, as % change
    logs = [math.log(5 + s * 0.1 + 5 + 1) - math.log(10 + s * 0.3 + 10 + 1) for s in range(3)]
    assert lowers.loc["mean θ=0.1", "mean"] == pytest.approx(100 * math.expm1(sum(logs) / 3))
    assert not math.isnan(lowers.loc["mean θ=0", "ci_low"])
