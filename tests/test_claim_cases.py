"""Every claim on tables whose answer is known by construction (tests/fixtures/tables.py): a
case that makes it true, one that makes it false or leaves it open, and the artefacts that
would fake it (a lower plateau, a parameter ratio, a handful of leftover paths, a clock).
Verdicts are read as `scripts/report.py --from-table` reads them (tidy.from_table, then the
report's per-run table and claim tests); the last tests run the script itself."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from emergence_lab.report import tidy, verdicts
from emergence_lab.report.table import per_run_table
from tests.conftest import ROOT
from tests.fixtures.tables import CONTROL, EPOCHS, PARAMS, PE, levels, runs, vary

FAST = vary(CONTROL, tau=1.0)  # rises 4x faster after pruning, to the same plateau
FAST_LOWER = vary(CONTROL, tau=1.0, plateau=CONTROL.plateau - 0.015)  # and ends 1.5 points lower
CAPPED = vary(CONTROL, cap=CONTROL.plateau - 0.015)  # the control's curve, cut off lower


def claim_tests(table: pd.DataFrame) -> pd.DataFrame:
    runs_, hist, _ = tidy.from_table(table)
    return verdicts.claim_tests(per_run_table(runs_, hist, labelled=True), hist)


def verdict(table: pd.DataFrame, claim: str, scope: str = "all levels",
            strategy: str | None = "magnitude") -> str:
    t = claim_tests(table)
    t = t[(t.claim == claim) & (t.scope == scope)]
    if strategy is not None:
        t = t[t.strategy == strategy]
    assert len(t) == 1, (claim, scope, t)
    return t.verdict.iloc[0]


CASES = [  # (id, table, claim, scope, strategy, expected verdicts)
    ("speed: 4x faster to the same plateau", lambda: runs(levels(FAST)),
     "speeds_convergence", "all levels", "magnitude", {"supported"}),
    ("speed: the same curves", lambda: runs(levels(CONTROL)),
     "speeds_convergence", "all levels", "magnitude", {"inconclusive"}),
    ("speed: twice as slow", lambda: runs(levels(vary(CONTROL, tau=8.0))),
     "speeds_convergence", "all levels", "magnitude", {"contradicted"}),
    ("targets: 4x faster, 1.5 points lower", lambda: runs(levels(FAST_LOWER)),
     "reaches_targets_sooner", "all levels", "magnitude", {"supported"}),
    ("targets: the control's curve capped lower is never sooner", lambda: runs(levels(CAPPED)),
     "reaches_targets_sooner", "all levels", "magnitude", {"inconclusive", "not enough data"}),
    ("level: 1.5 points lower", lambda: runs(levels(FAST_LOWER)),
     "costs_accuracy", "all levels", "magnitude", {"supported"}),
    ("level: the same curves", lambda: runs(levels(CONTROL)),
     "costs_accuracy", "all levels", "magnitude", {"inconclusive"}),
    ("level: 1 point higher", lambda: runs(levels(vary(CONTROL, plateau=0.89))),
     "costs_accuracy", "all levels", "magnitude", {"contradicted"}),
    ("compound: faster and lower", lambda: runs(levels(FAST_LOWER)),
     "faster_but_lower", "all levels", "magnitude", {"supported"}),
    ("compound: capped lower is not ahead early", lambda: runs(levels(CAPPED)),
     "faster_but_lower", "all levels", "magnitude", {"inconclusive", "contradicted"}),
    ("compound: faster, not lower", lambda: runs(levels(FAST)),
     "faster_but_lower", "all levels", "magnitude", {"inconclusive", "contradicted"}),
    ("dose: the cost grows with the amount", lambda: runs(
        {("magnitude", a): vary(CONTROL, plateau=CONTROL.plateau - 0.03 * a) for a in (.3, .5, .7)}),
     "costs_accuracy", "dose-response (per 10 % pruned)", "magnitude", {"supported"}),
    ("dose: the same cost at every amount", lambda: runs(levels(FAST_LOWER)),
     "costs_accuracy", "dose-response (per 10 % pruned)", "magnitude", {"inconclusive"}),
    ("gap: the pruned gap 1 point narrower", lambda: runs(levels(vary(CONTROL, gap=0.01))),
     "narrows_generalization_gap", "all levels", "magnitude", {"supported"}),
    ("gap: the same gap", lambda: runs(levels(CONTROL)),
     "narrows_generalization_gap", "all levels", "magnitude", {"inconclusive"}),
    ("loss: the pruned run ends at a higher training loss",
     lambda: runs(levels(vary(CONTROL, loss=0.40))),
     "higher_final_train_loss", "all levels", "magnitude", {"supported"}),
    ("loss: the same loss", lambda: runs(levels(CONTROL)),
     "higher_final_train_loss", "all levels", "magnitude", {"inconclusive"}),
    ("E: 35 % lower after pruning", lambda: runs(levels(vary(CONTROL, e_factor=0.65))),
     "lowers_E", "all levels", "magnitude", {"supported"}),
    ("E: 35 % lower where large, 3 paths left where the control has none", lambda: runs(
        levels(vary(CONTROL, e_factor=0.65, e_tau=2.0, e_floor=3.0)),
        control=vary(CONTROL, e_tau=2.0)),
     "lowers_E", "all levels", "magnitude", {"supported"}),
    ("E: unchanged by pruning", lambda: runs(levels(CONTROL)),
     "lowers_E", "all levels", "magnitude", {"inconclusive"}),
    ("relative E: magnitude keeps 30 % more E than random at the same sparsity", lambda: runs(
        {**levels(vary(CONTROL, e_factor=1.3)), **levels(CONTROL, strategy="random")}),
     "relative_E_vs_random", "all levels", "magnitude", {"supported"}),
    ("relative E: the parameter ratio alone (E unchanged, both strategies)", lambda: runs(
        {**levels(CONTROL), **levels(CONTROL, strategy="random")}),
     "relative_E_vs_random", "all levels", "magnitude", {"inconclusive"}),
    ("relative E: magnitude keeps less E than random", lambda: runs(
        {**levels(vary(CONTROL, e_factor=0.7)), **levels(CONTROL, strategy="random")}),
     "relative_E_vs_random", "all levels", "magnitude", {"contradicted"}),
    ("E trend: E decays", lambda: runs(levels(vary(CONTROL, e_tau=5.0)),
                                       control=vary(CONTROL, e_tau=5.0)),
     "E_falls_during_training", "all runs", None, {"supported"}),
    ("E trend: E flat", lambda: runs(levels(CONTROL)),
     "E_falls_during_training", "all runs", None, {"inconclusive"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_claim_on_a_table_with_a_known_answer(case):
    _, table, claim, scope, strategy, expected = case
    assert verdict(table(), claim, scope, strategy) in expected


def test_the_artefacts_of_the_old_measures_are_gone():
    """The old speed measure counted a pruned arm that ends lower as slower however fast it
    rose; the old relative-E verdict was the parameter ratio ("supported, +100 %" with E
    unchanged): neither survives."""
    fast_lower = claim_tests(runs(levels(FAST_LOWER)))
    head = verdicts.headline(fast_lower).set_index(["claim", "strategy"])
    assert head.loc[("speeds_convergence", "magnitude"), "verdict"] == "supported"
    assert head.loc[("speeds_convergence", "magnitude"), "mean"] < -2
    assert "raises_relative_E" not in set(fast_lower.claim)


def _predict_table(signal: str, seed: int = 0) -> pd.DataFrame:
    """20 networks (one per seed, no pruning) whose final accuracy depends on E at epoch 1
    (`signal`="E"), or whose E is the same function of the epoch in every run ("clock"), or
    noise unrelated to anything ("noise")."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(20):
        e1 = rng.uniform(1e4, 1e5)
        plateau = 0.80 + (0.08 * (e1 - 1e4) / 9e4 if signal == "E" else rng.uniform(0, 0.08))
        t = runs({}, seeds=1, seed=1000 * seed + s, pe=0, e_noise=0.0 if signal == "clock" else 0.05,
                 control=vary(CONTROL, plateau=plateau, e0=e1 if signal != "clock" else 5e4,
                              e_tau=4.0))
        if signal == "noise":
            t["E"] = rng.uniform(1e4, 1e5, len(t)).round()
        frames.append(t.assign(run_id=f"n{s}", seed=s))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("signal, expected", [
    ("E", {"supported"}), ("clock", {"not enough data"}), ("noise", {"inconclusive"})])
def test_e_predicts_the_final_accuracy_only_when_it_does(signal, expected):
    t = claim_tests(_predict_table(signal))
    row = t[t.claim == "E_predicts_accuracy"].iloc[0]
    assert row.verdict in expected, row


def _plateau_runs(e_at_own_plateau: bool) -> pd.DataFrame:
    """Two arms whose accuracy plateaus at different epochs; E reaches zero at each run's own
    plateau, or at epoch PE + 1 while the accuracy still climbs."""
    t = runs({("magnitude", 0.5): vary(CONTROL, tau=1.0)}, noise=0.0005)
    for _, r in t.groupby("run_id"):
        fast = r.strategy.iloc[0] == "magnitude"
        stop = (PE + 4 if fast else PE + 14) if e_at_own_plateau else PE + 1
        t.loc[r.index, "E"] = np.maximum(0, 1000.0 * (stop - r.epoch))
    t["relative_E"] = t.E / t.n_params
    return t


def test_little_left_when_e_reaches_zero_at_the_plateau_not_while_it_climbs():
    assert verdict(_plateau_runs(True), "E_zero_little_left", "all runs", None) == "supported"
    assert verdict(_plateau_runs(False), "E_zero_little_left", "all runs", None) == "contradicted"


def _design_table(axis: str, effect: float) -> pd.DataFrame:
    """The emergence-init sweep (α 1, 1.1, 1.3, 1.5: final accuracy + effect per +0.1 α), or
    the pruning-epoch sweep (pruned at 1, 3, 5, 10: cost 2 points less effect per epoch)."""
    frames = []
    if axis == "init_alpha":
        for i, alpha in enumerate((1.0, 1.1, 1.3, 1.5)):
            arm = vary(CONTROL, init_alpha=alpha, plateau=0.85 + effect * (alpha - 1) / 0.1)
            frames.append(runs({}, control=arm, seed=i, group=f"alpha={alpha}"))
        return pd.concat(frames, ignore_index=True)
    for i, pe in enumerate((1, 3, 5, 10)):
        cost = 0.02 - effect * pe
        frames.append(runs({("magnitude", 0.5): vary(CONTROL, plateau=CONTROL.plateau - cost)},
                           pe=pe, seed=i, group=f"pruning.epoch={pe}"))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("axis, claim, strategy, scope, effect, expected", [
    ("init_alpha", "emergence_init_improves_accuracy", "", "final accuracy", 0.004, "supported"),
    ("init_alpha", "emergence_init_improves_accuracy", "", "final accuracy", 0.0, "inconclusive"),
    ("prune_epoch", "later_pruning_helps", "magnitude", "per epoch later", 0.002, "supported"),
    ("prune_epoch", "later_pruning_helps", "magnitude", "per epoch later", 0.0, "inconclusive"),
])
def test_claims_across_a_design_axis(axis, claim, strategy, scope, effect, expected):
    t = claim_tests(_design_table(axis, effect))
    row = t[(t.claim == claim) & (t.scope == scope) & (t.strategy == strategy)]
    assert list(row.verdict) == [expected], t[t.claim == claim]


@pytest.mark.parametrize("gain, expected", [(0.01, "supported"), (0.0, "inconclusive")])
def test_pretraining_raises_e_and_accuracy_in_the_transfer_2x2(gain, expected):
    """pretrain x pruning: pretrained arms end `gain` higher with 30 % more E, or the same."""
    frames = []
    for pre in (0.0, 1.0):
        arm = vary(CONTROL, pretrained=pre, plateau=CONTROL.plateau + gain * pre,
                   e0=CONTROL.e0 * (1 + 30 * gain * pre))
        frames.append(runs({("magnitude", 0.5): arm}, control=arm, pe=0, seed=int(pre),
                           group=f"pretrain.epochs={20 * int(pre)}")
                      .assign(run_id=lambda d, p=pre: d.run_id + f"-p{p:g}"))
    t = claim_tests(pd.concat(frames, ignore_index=True))
    rows = t[t.claim == "pretraining_raises_E_and_accuracy"].set_index("scope")
    assert set(rows.index) == {"dense: accuracy", "dense: E", "pruned 50%: accuracy",
                               "pruned 50%: E"}
    assert set(rows.verdict) == {expected}, rows[["mean", "p_holm", "verdict"]]


NULL_TABLES = 12


def test_tables_with_no_effect_decide_at_most_the_tests_level():
    """Every arm drawn from the control's spec (magnitude and random, three amounts), 20
    tables: at most 10 % of the decided verdicts, at most α of them per table on average."""
    decided, total = 0, 0
    for seed in range(NULL_TABLES):
        t = claim_tests(runs({**levels(CONTROL), **levels(CONTROL, strategy="random")},
                             seed=seed, noise=0.004))
        tested = t[t.verdict != "not enough data"]
        decided += int(tested.verdict.isin(["supported", "contradicted"]).sum())
        total += len(tested)
    assert total > 20 * NULL_TABLES
    assert decided / total <= 0.10, (decided, total)


@pytest.mark.slow
def test_the_report_script_reads_the_cases_from_a_table(tmp_path):
    """Through the command line: a faster-but-lower table and a null table."""
    for name, table, expected in (
            ("fast_lower", runs(levels(FAST_LOWER)), {"faster_but_lower": "supported",
                                                       "costs_accuracy": "supported",
                                                       "reaches_targets_sooner": "supported"}),
            ("capped", runs(levels(CAPPED)), {"reaches_targets_sooner": "inconclusive"})):
        path = tmp_path / f"{name}.csv"
        table.to_csv(path, index=False)
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"),
                               "--from-table", str(path), "--out", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        claims = verdicts.headline(pd.read_csv(tmp_path / name / "claims.csv"))
        got = claims[claims.strategy.fillna("").isin(["magnitude", ""])].set_index("claim").verdict
        assert {k: got[k] for k in expected} == expected
    assert EPOCHS > PE


def test_the_offset_and_the_summary_are_shown_beside_the_verdicts_sum():
    """E 35 % lower where large, 3 paths left where the control's E has decayed to 0: the sum
    reads about -35 %; the geometric mean of the epochs' (E + 1) ratios reads the leftover
    paths as a rise (log 4 at every late epoch)."""
    from emergence_lab.report.decompose import e_summaries

    table = runs({("magnitude", 0.5): CONTROL})
    control_e = np.maximum(0.0, 2e4 * (14 - table.epoch) / 9).round() * (1 + 0.01 * table.seed)
    pruned = (table.strategy == "magnitude") & (table.epoch > PE)
    table["E"] = np.where(pruned, (0.65 * control_e).round() + 3 * (control_e == 0), control_e)
    table["relative_E"] = table.E / table.n_params
    runs_, hist, _ = tidy.from_table(table)
    row = e_summaries(per_run_table(runs_, hist, labelled=True), hist).iloc[0]
    ours = float(row["ratio of sums, +1 path (the verdict's)"].split(" %")[0])
    geometric = float(row["geometric mean of the epochs' ratios, +1 path"].split(" %")[0])
    assert -45 < ours < -20 and geometric > 0, row.to_dict()
    assert verdict(table, "lowers_E", "50%") == "supported"


def test_the_sparsity_table_reads_nothing_into_a_clock():
    """E that is the same function of the epoch in every run: within a run the accuracy still
    to come also falls with the epoch, but with the epoch partialled out nothing is left."""
    runs_, hist, _ = tidy.from_table(runs(levels(CONTROL), e_noise=0.0))
    per_run = per_run_table(runs_, hist, labelled=True)
    assert verdicts.run_correlations(per_run, hist).isna().all()
    table = verdicts.sparsity_controls(per_run, hist)
    assert set(table[table.signal == "E"].verdict) == {"not enough data"}


def _with_landscape(table: pd.DataFrame, sharp, rough, density, seed: int = 0) -> pd.DataFrame:
    """Landscape columns at the pruning epoch, the one after and the last (NaN elsewhere), from
    functions of each row (and noise)."""
    rng = np.random.default_rng(seed)
    t = table.copy()
    at = t.epoch.isin([t.prune_epoch.iloc[0], t.prune_epoch.iloc[0] + 1, t.epoch.max()])
    noise = rng.normal(0, 1, (3, len(t)))
    for key, f, k in (("landscape/lambda_max", sharp, 0), ("landscape/roughness", rough, 1),
                      ("landscape/trace_per_param", density, 2)):
        t[key] = np.where(at, [f(r) for r in t.itertuples()] + noise[k], np.nan)
    return t


@pytest.mark.parametrize("claim, follows, expected", [
    ("E_tracks_sharpness", True, {"supported"}),
    ("E_tracks_sharpness", False, {"inconclusive"}),
    ("E_tracks_roughness", True, {"supported"}),
    ("E_tracks_roughness", False, {"inconclusive"}),
])
def test_e_tracks_the_landscape_between_runs_only_when_it_does(claim, follows, expected):
    """20 networks whose E differs (epoch 1 on): the top eigenvalue and the roughness follow
    log E (plus noise), or are noise alone."""
    base = _predict_table("E")

    def signal(r):
        return 10 * math.log(r.E + 1) if follows else 0.0

    t = claim_tests(_with_landscape(base, signal, signal, lambda r: 0.0))
    rows = t[t.claim == claim]
    assert list(rows.scope) == ["epoch 1", "epoch 20"]
    assert set(rows.verdict) <= expected and rows.verdict.iloc[-1] in expected, rows


@pytest.mark.parametrize("extra, expected", [(6.0, "supported"), (0.0, "inconclusive")])
def test_pruning_raises_curvature_density_only_when_it_does(extra, expected):
    """The pruned arms' trace per surviving parameter `extra` above the control's (noise sd 1)
    after pruning, against the control and against random pruning (which stays level)."""
    table = runs({**levels(CONTROL), **levels(CONTROL, strategy="random")})

    def density(r):
        return 10.0 + (extra if r.strategy == "magnitude" and r.epoch > PE else 0.0)

    t = claim_tests(_with_landscape(table, lambda r: 0.0, lambda r: 0.0, density))
    head = verdicts.headline(t).set_index(["claim", "strategy"])
    assert head.loc[("pruning_raises_curvature_density", "magnitude"), "verdict"] == expected
    assert head.loc[("curvature_density_vs_random", "magnitude"), "verdict"] == expected
    assert head.loc[("pruning_raises_curvature_density", "random"), "verdict"] == "inconclusive"


def test_without_landscape_series_the_landscape_claims_have_no_row():
    t = claim_tests(runs(levels(CONTROL)))
    assert not t.claim.isin(["E_tracks_sharpness", "E_tracks_roughness",
                             "pruning_raises_curvature_density"]).any()


def _with_small_dense(table: pd.DataFrame, e_factor: float, group: str = "model.hidden=[256, 128]",
                      **arm) -> pd.DataFrame:
    """Beside `table` (one group, pruned 50 %), a dense network of the pruned size in its own
    group (another width): as many parameters as the pruned arm keeps, E times `e_factor`."""
    small = runs({}, control=vary(CONTROL, e0=CONTROL.e0 * e_factor, **arm), seed=7,
                 group=group)
    n = round(PARAMS * 0.5)
    small = small.assign(n_params=n, relative_E=small.E / n)
    base = table.assign(group=table.get("group", "model.hidden=[512, 256]"))
    return pd.concat([base, small], ignore_index=True)


@pytest.mark.parametrize("e_factor, expected", [(0.6, "supported"), (1.0, "inconclusive")])
def test_relative_e_against_a_dense_network_of_the_pruned_size(e_factor, expected):
    """The pruned arm keeps the control's E on half the parameters; a dense network with as
    many parameters has 60 % of that E, or all of it."""
    table = _with_small_dense(runs({("magnitude", 0.5): CONTROL}), e_factor)
    t = claim_tests(table)
    row = t[(t.claim == "relative_E_vs_dense") & (t.strategy == "magnitude")]
    assert list(row.verdict) == [expected], t[t.claim == "relative_E_vs_dense"]


def test_the_transfer_design_compares_the_pretrained_pruned_net_with_a_dense_one_of_its_size():
    frames = []
    for pre in (0.0, 1.0):
        arm = vary(CONTROL, pretrained=pre, plateau=CONTROL.plateau + 0.01 * pre)
        frames.append(runs({("magnitude", 0.5): arm}, control=arm, pe=0, seed=int(pre),
                           group=f"pretrain.epochs={20 * int(pre)}")
                      .assign(run_id=lambda d, p=pre: d.run_id + f"-p{p:g}"))
    table = _with_small_dense(pd.concat(frames, ignore_index=True), 1.0,
                              group="pretrain.epochs=0, model.hidden=[256, 128]")
    t = claim_tests(table)
    rows = t[t.claim == "pretraining_raises_E_and_accuracy"].set_index("scope")
    assert rows.loc["pruned vs random-init dense of its size: accuracy", "verdict"] == "supported"
    assert rows.loc["dense: accuracy", "verdict"] == "supported"  # the full-size pair only
