"""The tidy table in and out: a store's report -> epochs.csv -> --from-table gives the same
claims.csv; bad tables get one line naming the problem."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from emergence_lab.report import tidy
from emergence_lab.report.assemble import ReportError
from emergence_lab.report.build import build_report, build_report_from_table
from tests.conftest import ROOT
from tests.test_report import CONTROL, PRUNED, jitter, sweep_with


def _store_report(store, tmp_path):
    parent = sweep_with(store, lambda s: jitter(CONTROL, s), lambda s: jitter(PRUNED, s, -0.002),
                        levels=(0.3, 0.5))
    return build_report(store, sweep=parent, out=str(tmp_path / "store"), log_back=False)


def test_store_to_table_to_report_gives_the_same_claims(store, tmp_path):
    out = _store_report(store, tmp_path)
    table = pd.read_csv(out / "epochs.csv")
    assert list(table.columns[:len(tidy.REQUIRED)]) == list(tidy.REQUIRED)
    assert set(table.strategy) == {"none", "magnitude"}
    assert table.epoch.min() == 1 and (table.amount[table.strategy == "none"] == 0).all()
    again = build_report_from_table(str(out / "epochs.csv"), str(tmp_path / "table"))
    assert (again / "claims.csv").read_text() == (out / "claims.csv").read_text()
    assert (again / "report.html").is_file()


def _table(tmp_path, edit) -> str:
    rows = []
    for seed in range(3):
        for amount in (0.0, 0.5):
            for epoch in range(1, 5):
                rows.append({"run_id": f"{amount}-{seed}", "seed": seed,
                             "strategy": "none" if amount == 0 else "magnitude", "amount": amount,
                             "prune_epoch": 2, "epoch": epoch, "train_acc": 0.5 + 0.05 * epoch,
                             "test_acc": 0.5 + 0.04 * epoch - 0.02 * amount + 0.001 * seed,
                             "n_params": 1000 * (1 - amount), "E": 100 - 10 * epoch,
                             "relative_E": (100 - 10 * epoch) / (1000 * (1 - amount))})
    df = edit(pd.DataFrame(rows))
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.drop(columns="seed"), r"missing column 'seed' \(a tidy table has run_id, seed"),
    (lambda d: d.astype({"E": object}).assign(E=["x"] + list(d.E[1:])),
     r"row 2 \(line of the file\): E='x' is not a number"),
    (lambda d: d.assign(test_acc=d.test_acc * 100), r"test_acc=.* is not a fraction in \[0, 1\]"),
    (lambda d: d.assign(epoch=d.epoch + 0.5), r"epoch must be an integer"),
])
def test_a_bad_table_is_one_line_naming_the_problem(tmp_path, edit, message):
    with pytest.raises(ReportError, match=message):
        build_report_from_table(_table(tmp_path, edit), str(tmp_path / "out"))


def test_a_seed_with_no_control_is_listed_as_unpaired_never_guessed(tmp_path):
    path = _table(tmp_path, lambda d: d[~((d.amount == 0) & (d.seed == 2))])
    out = build_report_from_table(path, str(tmp_path / "out"))
    text = (out / "report.md").read_text()
    assert "Unpaired runs" in text and "0.5-2 (group all runs, seed 2): no control" in text
    claims = pd.read_csv(out / "claims.csv").set_index("claim")
    assert claims.loc["costs_accuracy", "n"] == 2  # seeds 0 and 1 only


def test_an_empty_optional_value_is_named_in_the_report_never_dropped_silently(tmp_path):
    """train_loss is optional, but a run that has it at every other epoch and not at one: the
    report names the run and the epoch (that epoch is left out of what reads train_loss)."""
    from tests.fixtures.tables import CONTROL, levels, runs

    table = runs(levels(CONTROL), seeds=2, epochs=6, pe=2)
    table = table.assign(train_loss=table.train_loss.where(table.index != 3))
    table.to_csv(tmp_path / "t.csv", index=False)
    row = table.iloc[3]
    out = build_report_from_table(str(tmp_path / "t.csv"), str(tmp_path / "out"))
    text = (out / "report.md").read_text()
    assert "Empty values in the table" in text
    assert f"{row.run_id}: train_loss empty at epoch {int(row.epoch)}" in text


def test_from_table_on_the_command_line(tmp_path):
    path = _table(tmp_path, lambda d: d.drop(columns="E"))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--from-table", path,
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"report: --from-table {path}: missing column 'E' (a tidy table has run_id, seed, strategy, "
        f"amount, prune_epoch, epoch, train_acc, test_acc, n_params, E, relative_E)"]


def test_convergence_reads_validation_accuracy_where_every_run_has_one(tmp_path):
    """val_acc: the pruned runs reach the shared target on validation at once, on test never."""
    def with_val(d):
        return d.assign(val_acc=[0.9 if (a > 0 or e == 4) else 0.5
                                 for a, e in zip(d.amount, d.epoch, strict=True)])
    out = build_report_from_table(_table(tmp_path, with_val), str(tmp_path / "v"))
    assert "read validation accuracy" in (out / "report.md").read_text()
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs.selection_key) == {"val/acc"}
    pruned, control = runs[runs.level > 0], runs[runs.level == 0]
    assert set(pruned.epochs_to_common_target) == {1.0} and set(control.epochs_to_common_target) == {2.0}
    plain = build_report_from_table(_table(tmp_path, lambda d: d), str(tmp_path / "t"))
    assert "read test accuracy: the runs have no validation split" in (plain / "report.md").read_text()


def test_one_holm_family_the_same_test_shows_one_p_holm_in_every_table(tmp_path):
    def two_settings(d):
        d = d.assign(E=[e * (1 - 0.3 * a) + s for e, a, s in zip(d.E, d.amount, d.seed, strict=True)])
        return d.assign(**{"emergence/E/mean/0.05/edges": d.E * (1 - 0.5 * d.amount),
                           "emergence/relative/mean/0.05/edges": d.relative_E})
    out = build_report_from_table(_table(tmp_path, two_settings), str(tmp_path / "h"))
    main = pd.read_csv(out / "claims.csv")
    main = main[main.claim == "lowers_E"].set_index("scope")
    table = pd.read_csv(out / "theta_verdicts.csv")
    paper = table[(table.setting == "mean θ=0.05, units") & (table.claim == "lowers_E")]
    assert len(paper) == 1
    assert paper.p_holm.iloc[0] == pytest.approx(main.p_holm.iloc[0])
    assert paper.p.iloc[0] == pytest.approx(main.p.iloc[0])


def test_relative_e_explained_says_when_the_rise_is_the_parameter_count(tmp_path):
    """E unchanged by pruning (up to noise of either sign), parameters halved: relative E rises
    by the parameter count's arithmetic alone, and the caveat says so."""
    def same_e(d):
        e = 50.0 + d.seed * 3 + [(-1) ** s * 0.5 * a for s, a in zip(d.seed, d.amount, strict=True)]
        return d.assign(E=e, relative_E=e / d.n_params)
    out = build_report_from_table(_table(tmp_path, same_e), str(tmp_path / "r"))
    rel = pd.read_csv(out / "relative_E.csv").iloc[0]
    assert rel.note.startswith("the rise in relative E is the parameter count's")
    assert (1 + rel["E %"] / 100) == pytest.approx((1 + rel["relative E %"] / 100)
                                                   * (1 + rel["parameters %"] / 100))
    assert rel["parameters %"] == pytest.approx(-50, abs=1)
    text = (out / "report.md").read_text()
    assert "the rise in relative E is the parameter count's" in text  # beside its table


def test_a_control_only_sweep_says_nothing_was_pruned(tmp_path):
    out = build_report_from_table(_table(tmp_path, lambda d: d[d.amount == 0]), str(tmp_path / "c"))
    text = (out / "report.md").read_text()
    assert "nothing pruned (controls only)" in text and "pruned after epoch" not in text


@pytest.mark.parametrize("change, message", [
    (lambda t: t.assign(seed=t.seed.astype(object).where(t.index != 3, 10 ** 30)),
     "seed must be an integer below"),
    (lambda t: t.assign(E=t.E.where(t.index != 4, float("inf"))), "a value is infinite"),
    (lambda t: t.assign(test_acc=t.test_acc.where(t.index != 5)), "test_acc is empty"),
    (lambda t: pd.concat([t, t.iloc[[6]]], ignore_index=True), "a second row for the same run"),
    (lambda t: t.assign(epoch=t.epoch.where(t.index != 0, -1)), "epoch must be >= 1"),
    (lambda t: t.assign(E=t.E.where(t.index != 2, -5)), "E and relative_E must be >= 0"),
    (lambda t: t.assign(amount=t.amount.where(t.index != 7, 1.5)), "amount must be a fraction"),
    (lambda t: t.assign(prune_epoch=t.prune_epoch.where(t.index != 1, 99)),
     "prune_epoch is after the run's last epoch"),
    # a per-run value that one row of the run contradicts: not read from whichever comes first
    (lambda t: t.assign(prune_epoch=t.prune_epoch.where(t.index != 1, 1)),
     "prune_epoch differs from the run's first row"),
    (lambda t: t.assign(amount=t.amount.where(t.index != 8, 0.5)),
     "amount differs from the run's first row"),
    (lambda t: t.assign(seed=t.seed.where(t.index != 3, 7)), "seed differs from the run's"),
    (lambda t: t.assign(strategy=t.strategy.where(t.index != 9, "random")),
     "strategy differs from the run's first row"),
])
def test_a_table_is_validated_whole_and_the_error_names_the_row(change, message):
    from emergence_lab.report.tidy import TableError, from_table
    from tests.fixtures.tables import CONTROL, levels, runs

    table = change(runs(levels(CONTROL), seeds=2, epochs=6, pe=2))
    with pytest.raises(TableError, match=rf"row \d+: {message}.*\(run '.+', epoch"):
        from_table(table)
