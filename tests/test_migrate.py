"""scripts/migrate_store.py: an older store's runs and cells rewritten once, in place, with a dry
run; the run pipeline then finds them without any back-compat branch of its own."""

from __future__ import annotations

import subprocess
import sys

from emergence_lab.config import validate
from emergence_lab.config.identity import config_hash, legacy_hash
from emergence_lab.run import pipeline
from emergence_lab.store import connection, ledger, records
from emergence_lab.store.connection import STORE_VERSION_TAG
from tests.conftest import ROOT, compose_cfg


def migrate(store: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "migrate_store.py"),
                           "--tracking-uri", store, *args], capture_output=True, text=True,
                          timeout=300)


def make_old(store: str, overrides: list[str]) -> tuple[str, str, str]:
    """A finished run as older code stored it: tagged with the hash of the scheme where the
    threshold grid was part of a cell's identity, in an experiment without a store version."""
    c = validate(compose_cfg(overrides))
    old, new = legacy_hash(c), config_hash(c)
    assert old not in (None, new)
    pipeline.train(compose_cfg(overrides))
    (run,) = records.experiment_runs(store, "emergence")
    records.set_run_tags(store, run.info.run_id, {"config_hash": old})
    client = connection.get_client(store)
    exp_id = connection.ensure_experiment(store, "emergence")
    client.set_experiment_tag(exp_id, STORE_VERSION_TAG, "1")
    return run.info.run_id, old, new


def test_an_old_store_is_migrated_once_and_its_finished_cell_is_found(tiny_overrides, store):
    overrides = tiny_overrides + ["threshold.grid=[0.0,0.05]"]
    run_id, old, new = make_old(store, overrides)
    client = connection.get_client(store)
    exp_id = connection.ensure_experiment(store, "emergence")
    # an unfinished cell from before the ledger: no owner tag, no ledger entry
    orphan = client.create_run(exp_id, tags={"config_hash": "h-old"}).info.run_id
    client.set_terminated(orphan, "KILLED")

    dry = migrate(store, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would change emergence: config_hash of {run_id}: {old} -> {new}" in dry.stdout
    assert f"would change emergence: ledger of cell.h-old.1: - -> {orphan}" in dry.stdout
    assert "none written (--dry-run)" in dry.stdout
    assert client.get_run(run_id).data.tags["config_hash"] == old  # nothing written

    done = migrate(store)
    assert done.returncode == 0 and "3 changes (2 to runs or cells)" in done.stdout, done.stdout
    tags = client.get_run(run_id).data.tags
    assert (tags["config_hash"], tags["config_hash_legacy"]) == (new, old)
    assert ledger.latest_entry(store, exp_id, "cell.h-old")[1] == orphan
    again = migrate(store)
    assert "0 changes" in again.stdout and "up to date" in again.stdout  # idempotent

    pipeline.train(compose_cfg(overrides))  # the finished cell is skipped, not retrained
    assert len(records.experiment_runs(store, "emergence")) == 2  # the run and the orphan


def test_the_report_on_an_unmigrated_store_says_so_in_one_line(tiny_overrides, store, tmp_path,
                                                               capsys):
    from emergence_lab.report.build import build_report

    make_old(store, tiny_overrides + ["threshold.grid=[0.0,0.05]"])
    build_report(store, experiment="emergence", out=str(tmp_path / "r"), log_back=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if "migrate_store.py" in line]
    assert len(lines) == 1 and "written by an older emergence-lab" in lines[0]
    assert migrate(store).returncode == 0
    build_report(store, experiment="emergence", out=str(tmp_path / "r2"), log_back=False)
    assert "migrate_store.py" not in capsys.readouterr().err


def test_a_ledger_anchored_under_its_older_tag_name_is_found(store):
    """Stores written before 2026-12-04 name the ledger run in the tag claims_run of a deleted
    anchor experiment, which cannot be re-tagged: the ledger reads both names."""
    client = connection.get_client(store)
    exp_id = connection.ensure_experiment(store, "emergence")
    home = connection.ensure_experiment(store, ledger.LEDGER_EXPERIMENT)
    older = client.create_run(home, run_name=f"claims-of-experiment-{exp_id}").info.run_id
    anchor = client.create_experiment(ledger.LEDGER_ANCHOR.format(exp_id),
                                      tags={"claims_run": older})
    client.delete_experiment(anchor)
    ledger._LEDGER_RUNS.clear()
    assert ledger.set_once(store, exp_id, "cell.h.1", "run-a") == "run-a"
    assert client.get_run(older).data.params == {"cell.h.1": "run-a"}  # in the older ledger
