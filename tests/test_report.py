"""The report on small stores written by the tests: runs with known metric curves."""

import base64
import math
import subprocess
import sys
import time

import pandas as pd
import pytest

from emergence_lab.report import groups, table
from emergence_lab.report.assemble import ReportError
from emergence_lab.report.build import build_report
from emergence_lab.report.synthetic import big_sweep, branch, params, write_run
from emergence_lab.store import artifacts, connection, sweeps
from tests.conftest import ROOT

CONTROL = branch([0.1, 0.5, 0.6, 0.7, 0.8], [100, 90, 80, 70, 60], [0.1, 0.09, 0.08, 0.07, 0.06],
                 pe=2, after=(80, 0.08, 0.6))
PRUNED = branch([0.1, 0.5, 0.6, 0.75, 0.76], [100, 90, 80, 40, 30], [0.1, 0.09, 0.08, 0.2, 0.15],
                pe=2, after=(50, 0.25, 0.4), sparsity=0.5, params=500)


def test_per_run_values_by_hand(store):
    parent = sweeps.start_sweep(store, "synthetic", "s", {})
    write_run(store, parent, "c", params(0.0, 0), CONTROL)
    write_run(store, parent, "p", params(0.5, 0), PRUNED)
    from emergence_lab.report.assemble import load_runs
    runs, hist = load_runs(store, sweeps.sweep_children(store, parent))
    t = table.per_run_table(runs, hist).set_index("level")
    c, p = t.loc[0.0], t.loc[0.5]
    # control: final 0.8; 99 % of it is 0.792, first reached at epoch 4 -> 2 epochs after pruning
    assert (c.final_acc, c.epochs_to_99pct_final) == (0.8, 2.0)
    # pruned: final 0.76, 99 % = 0.7524 -> reached at epoch 4 (0.75 < 0.7524) -> 2 epochs
    assert (p.final_acc, p.epochs_to_99pct_final) == (0.76, 2.0)
    assert math.isnan(p.epochs_to_control_final)  # 0.8 never reached
    assert c.epochs_to_control_final == 2.0
    # area after pruning: trapezoid over (2, 0.4), (3, 0.75), (4, 0.76) = 0.575 + 0.755
    assert p.auc_after_prune == pytest.approx(1.33)
    assert c.auc_after_prune == pytest.approx(0.65 + 0.75)
    assert (p.E_before, p.E_after, p.E_final) == (80, 50, 30)
    assert p.E_change_pct == pytest.approx(-37.5)
    assert (p.relE_before, p.relE_after, p.relE_final) == (0.08, 0.25, 0.15)
    assert p.d_final_acc == pytest.approx(-0.04)
    assert p.d_mean_E_after_prune == pytest.approx(35 - 65)
    assert (p.params_surviving, p.sparsity, p.s_per_epoch) == (500, 0.5, 2.0)


def test_mean_and_t_interval_by_hand():
    mean, half, n = table.mean_ci([1.0, 2.0, 3.0])
    # t(0.975, df=2) = 4.3027 (tables); sem = 1 / sqrt(3)
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4)
    assert table.mean_ci([5.0])[:2] == (5.0, pytest.approx(math.nan, nan_ok=True))
    assert table.mean_ci([])[2] == 0


def sweep_with(store, control, pruned_by_seed, levels=(0.5,), seeds=(0, 1, 2)):
    parent = sweeps.start_sweep(store, "synthetic", "s", {})
    for seed in seeds:
        write_run(store, parent, f"c{seed}", params(0.0, seed), control(seed))
        for level in levels:
            write_run(store, parent, f"p{level}-{seed}", params(level, seed), pruned_by_seed(seed))
    return parent


def verdicts(store, parent, tmp_path):
    out = build_report(store, sweep=parent, out=str(tmp_path / "r"), log_back=False)
    tests = verdict_rows(out)
    return tests.set_index("claim")["verdict"].to_dict(), out


def verdict_rows(out):
    """The headline verdicts of a written report (across levels, or at the only level)."""
    from emergence_lab.report.verdicts import headline
    return headline(pd.read_csv(out / "claims.csv"))


def jitter(curves, seed, rate=0.01):
    return {k: {s: v * (1 + rate * seed) for s, v in c.items()} for k, c in curves.items()}


def test_claims_hold_on_a_sweep_built_to_satisfy_them(store, tmp_path):
    parent = sweep_with(store, lambda s: jitter(CONTROL, s), lambda s: jitter(PRUNED, s, -0.002))
    claims, out = verdicts(store, parent, tmp_path)
    assert claims["lowers_E"] == "supported"  # E summed after pruning: 70 against 130
    assert claims["costs_accuracy"] == "supported"  # 0.76 against 0.8 at the end
    # to 90 % of its own gain after pruning: 0.96 epochs against the control's 1.8
    assert claims["speeds_convergence"] == "supported"
    rows = verdict_rows(out).set_index("claim")
    assert rows.loc["speeds_convergence", "mean"] == pytest.approx(-0.84, abs=0.05)
    # 4 points lower at the end, but not ahead early: +0.5 points in seed 0, -0.4 in seed 1
    # (the control's curve is scaled up 1 % a seed)
    assert claims["faster_but_lower"] == "inconclusive"
    # no random arm: relative E has no matched null here, so no verdict (only its decomposition)
    assert claims["relative_E_vs_random"] == "not enough data"
    # E never gets near zero after pruning: the plateau claims have no run to use
    assert claims["E_zero_beats_clock"] == "not enough data"
    assert claims["E_zero_little_left"] == "not enough data"


def test_claims_do_not_hold_when_pruning_helps(store, tmp_path):
    slow = branch([0.1, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9], [100, 90, 80, 70, 60, 50, 40, 10],
                  [0.1] * 8, pe=2, after=(80, 0.1, 0.6))
    fast = branch([0.1, 0.5, 0.6, 0.93, 0.94, 0.94, 0.94, 0.94], [100, 90, 80, 90, 85, 80, 75, 70],
                  [0.1] * 3 + [0.05] * 5, pe=2, after=(85, 0.05, 0.6), sparsity=0.5, params=500)
    parent = sweep_with(store, lambda s: jitter(slow, s), lambda s: jitter(fast, s, 0.008))
    claims, out = verdicts(store, parent, tmp_path)
    # pruning raises E and gains accuracy: contradicted (significant on the other side)
    assert {k: claims[k] for k in ("lowers_E", "costs_accuracy", "faster_but_lower")} == {
        "lowers_E": "contradicted", "costs_accuracy": "contradicted",
        "faster_but_lower": "contradicted"}
    # it rises faster too: the speed claims hold whatever the level
    assert claims["speeds_convergence"] == "supported"
    assert claims["reaches_targets_sooner"] == "supported"
    rows = verdict_rows(out).set_index("claim")
    # the shared targets, 50/75/90 % of the way from 0.6 to 0.9 (0.75, 0.825, 0.87): one epoch
    # after pruning against 3, 5 and 5
    assert rows.loc["reaches_targets_sooner", "mean"] == pytest.approx(1 - 13 / 3, abs=0.01)
    assert rows.loc["reaches_targets_sooner", "censored"] == 0


def test_a_single_seed_and_level_is_not_enough_data(store, tmp_path):
    parent = sweep_with(store, lambda s: CONTROL, lambda s: PRUNED, seeds=(0,))
    claims, out = verdicts(store, parent, tmp_path)
    assert claims["lowers_E"] == "not enough data"
    md = (out / "report.md").read_text()
    assert "| 50%" in md and "80" in md  # the table still renders


def test_partial_sweep_lists_missing_and_failed_and_incomplete(store, tmp_path):
    parent = sweeps.start_sweep(store, "synthetic", "partial", {})
    jobs = [{"overrides": [f"pruning.amount={a}"], "config_hash": h}
            for a, h in (("0", "c"), ("0.5", "p"), ("0.7", "q"))]
    artifacts.log_json(store, parent, jobs, "sweep_jobs.json")
    write_run(store, parent, "c", {**params(0.0, 0), "dataset.name": "mnist"}, CONTROL,
              overrides="pruning.amount=0")
    write_run(store, parent, "p", params(0.5, 0), PRUNED, status="FAILED",
              overrides="pruning.amount=0.5")
    out = build_report(store, sweep=parent, out=str(tmp_path / "r"), log_back=False)
    md = (out / "report.md").read_text()
    assert "- pruning.amount=0.5" in md and "- pruning.amount=0.7" in md  # missing cells
    assert "p (FAILED): RuntimeError: boom" in md
    assert "| 0%" in md  # what exists still renders
    assert "### Incomplete groups" not in md  # the one group that exists has its control


def test_html_embeds_its_images_and_report_is_logged_back(store, tmp_path):
    parent = sweep_with(store, lambda s: jitter(CONTROL, s), lambda s: jitter(PRUNED, s),
                        levels=(0.3, 0.7), seeds=(0, 1))
    out = build_report(store, sweep=parent, out=str(tmp_path / "r"))
    pngs = sorted(out.glob("*.png"))
    assert {p.name.split("__")[1] for p in pngs} == {
        "emergence_and_acc_change.png", "relative_emergence.png", "emergence.png", "accuracy.png",
        "relE_vs_convergence.png", "E_vs_accuracy.png"}
    page = (out / "report.html").read_text()
    images = page.split('<img src="data:image/png;base64,')[1:]
    assert len(images) == len(pngs)
    assert all(base64.b64decode(i.split('"')[0])[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.level) == [0.0, 0.3, 0.7] and list(summary.n) == [2, 2, 2]
    assert summary.paper_final_acc.isna().all()  # pruned after 2 epochs: not the paper's protocol
    client = connection.get_client(store)
    exp = client.get_experiment_by_name("synthetic")
    (rep,) = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'report'")
    assert len(artifacts.load_json(store, rep.info.run_id, "source_runs.json")) == 6
    names = {a.path for a in client.list_artifacts(rep.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/summary.csv"} <= names


def run_report(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_no_store_is_a_clear_error_and_creates_nothing(tmp_path):
    proc = run_report(["--tracking-uri", "sqlite:///nowhere/mlflow.db"], tmp_path)
    assert proc.returncode == 2
    assert "no MLflow store at sqlite:///nowhere/mlflow.db" in proc.stderr
    assert not (tmp_path / "nowhere" / "mlflow.db").exists()


def test_no_runs_is_a_clear_error(store, tmp_path):
    connection.ensure_experiment(store, "empty")
    with pytest.raises(ReportError, match="no sweep"):
        build_report(store, out=str(tmp_path / "r"))
    proc = run_report(["--tracking-uri", store, "--experiment", "empty"], tmp_path)
    assert proc.returncode == 2 and "no runs for experiment empty" in proc.stderr


@pytest.mark.slow
@pytest.mark.timing
def test_a_hundred_runs_of_twenty_epochs_report_in_under_30s(store, tmp_path):
    parent = big_sweep(store, seeds=25, epochs=20)
    t0 = time.perf_counter()
    out = build_report(store, sweep=parent, out=str(tmp_path / "r"))
    elapsed = time.perf_counter() - t0
    assert elapsed < 30, elapsed
    assert list(pd.read_csv(out / "summary.csv").n) == [25, 25, 25, 25]


def test_the_papers_numbers_only_beside_its_protocol():
    run = pd.Series({"model.name": "mlp", "dataset.name": "mnist", "strategy": "magnitude",
                     "prune_epoch": 5, "trainer.lr": "0.005", "pretrain.epochs": "0",
                     "init.name": "standard"})
    assert groups.paper_protocol(run)
    for change in ({"prune_epoch": 2}, {"strategy": "random"}, {"pretrain.epochs": "20"},
                   {"init.name": "emergence"}, {"trainer.lr": "0.01"}, {"model.name": "cnn"},
                   {"dataset.name": "digits"}, {"lr_after": 0.01}):
        assert not groups.paper_protocol(pd.Series({**run.to_dict(), **change})), change


def test_strategies_are_labelled_from_their_settings():
    """The report's strategy label comes from the registry and the run's pruning params,
    logged as strings (runs from before a field existed lack it: its default)."""
    import pandas as pd

    from emergence_lab.report.groups import strategy_name

    def run(**params):
        return pd.Series({f"pruning.{k}": str(v) for k, v in params.items()})

    assert strategy_name(run(name="magnitude", amount=0.5, scope="global", steps=1)) == "magnitude"
    assert strategy_name(run(name="magnitude", amount=0.5, scope="layerwise")) == "magnitude layerwise"
    assert strategy_name(run(name="magnitude", amount=0.5, steps=3, reset="rewind",
                             rewind_epoch=1, epoch=5)) == "magnitude x3 rewind1"
    assert strategy_name(run(name="magnitude", amount=0.8, steps=8, schedule="cubic",
                             epoch=5)) == "magnitude x8 cubic"
    assert strategy_name(run(name="snip", amount=0.8, samples=256)) == "SNIP"
    assert strategy_name(run(name="structured", amount=0.5, scope="layerwise")) == "structured"
    assert strategy_name(run(name="grasp", amount=0.0)) == "control"
