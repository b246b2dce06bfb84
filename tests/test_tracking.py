import sqlite3
import time

import pytest

from emergence_lab.store import connection, ledger, records, sweeps


def test_relative_sqlite_uri_is_resolved_and_its_folder_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = connection.resolve_uri("sqlite:///sub/dir/mlflow.db")
    assert uri == f"sqlite:///{tmp_path}/sub/dir/mlflow.db"
    assert (tmp_path / "sub" / "dir").is_dir()
    assert connection.local_store_dir("http://127.0.0.1:5000") is None
    assert connection.resolve_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def _schema(path):
    """An SQLite store's schema: its tables and indexes (a table's clauses as a set: MLflow's
    own migrations order its constraints differently from one process to the next), schema
    version and experiments."""
    with sqlite3.connect(path) as db:
        objects = sorted((kind, name, frozenset(line.strip().rstrip(",") for line in sql.splitlines())
                          if sql else None)
                         for kind, name, sql in db.execute("SELECT type, name, sql FROM sqlite_master"))
        version = db.execute("SELECT version_num FROM alembic_version").fetchall()
        experiments = db.execute("SELECT experiment_id, name, artifact_location FROM experiments"
                                 ).fetchall()
    return objects, version, experiments


def test_a_new_store_is_a_copy_of_the_empty_schema_and_the_same_as_one_migrated(
        tmp_path, monkeypatch):
    """A new embedded store copies an empty schema made once per MLflow version instead of
    running MLflow's migrations (1.6 s of CPU each): the same tables, indexes, schema version
    and Default experiment (its artifact folder this store's own) as a store MLflow made."""
    from mlflow.store.db import utils

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    template = connection.schema_template()
    assert template.parent == tmp_path / "cache" / "emergence-lab" and not template.exists()
    migrated = tmp_path / "migrated" / "x.db"
    with monkeypatch.context() as m:  # no template can be made here: MLflow makes the store
        m.setenv("XDG_CACHE_HOME", "/proc/emergence-lab-cache")
        connection.get_client(f"sqlite:///{migrated}")
    assert not template.exists()
    first = tmp_path / "first" / "x.db"
    connection.get_client(f"sqlite:///{first}")  # makes the template, then copies it
    assert template.is_file()
    monkeypatch.setattr(utils, "_upgrade_db", lambda engine: pytest.fail("migrations ran"))
    second = tmp_path / "second" / "x.db"
    connection.get_client(f"sqlite:///{second}")  # a copy: no migration runs
    assert _schema(first)[:2] == _schema(second)[:2] == _schema(migrated)[:2]
    for store in (first, second, migrated):  # next to the store, not under the current folder
        assert _schema(store)[2] == [(0, "Default", str(store.parent / "artifacts" / "0"))]
    assert not list(tmp_path.glob("**/*.partial"))


@pytest.mark.parametrize("exc, status", [(RuntimeError("boom"), "FAILED"),
                                         (KeyboardInterrupt(), "KILLED")])
def test_run_status_on_exception(store, exc, status):
    with pytest.raises(type(exc)):
        with records.Run(store, "exp", "r", {"k": "v"}) as run:
            run.log_metrics({"a/b": 1.0}, step=0)
            raise exc
    got = connection.get_client(store).get_run(run.run_id)
    assert got.info.status == status
    assert got.data.tags["error"].startswith(type(exc).__name__)
    assert got.data.metrics == {"a/b": 1.0}


def test_sweep_parent_and_children(store):
    parent = sweeps.start_sweep(store, "exp", "sweep-1", {"sweep_dir": "/x"})
    for name in ("a", "b"):
        with records.Run(store, "exp", name, {}, parent_run_id=parent) as run:
            run.log_params({f"p{i}": i for i in range(250)})  # more than one batch
    sweeps.end_sweep(store, parent)
    children = sweeps.sweep_children(store, parent)
    assert [c.info.run_name for c in children] == ["a", "b"]
    params = [k for k in children[0].data.params if not k.startswith(ledger.LEASE_PREFIX)]
    assert len(params) == 250
    latest = sweeps.latest_sweep(store)
    assert latest.info.run_id == parent and latest.info.status == "FINISHED"
    artifact_uri = connection.get_client(store).get_experiment_by_name("exp").artifact_location
    assert artifact_uri.endswith("mlruns/artifacts/exp")


def test_a_reopened_sweep_is_the_latest(store):
    """make sweep run again (every cell skipped) then make report: the report is of that sweep,
    not of a sweep started in between."""
    first = sweeps.open_sweep(store, "exp", "first", "hash-1", {})
    second = sweeps.open_sweep(store, "other", "second", "hash-2", {})
    assert sweeps.latest_sweep(store).info.run_id == second
    assert sweeps.open_sweep(store, "exp", "first", "hash-1", {}) == first  # reopened
    assert sweeps.latest_sweep(store).info.run_id == first


def test_a_reader_in_a_transaction_does_not_hold_up_a_run_closing(store):
    """The embedded store keeps a write-ahead log: a process reading the store (a launcher, the
    UI, a report) never makes a run's closing wait, and sees the store as it was when its read
    began. In SQLite's default journal the close would wait for the reader (busy timeout, 20 s,
    then retries)."""
    with records.Run(store, "exp", "r", {}) as run:
        run.log_metrics({"a/b": 1.0}, step=0)
    path = store[len("sqlite:///"):]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT status FROM runs").fetchall() == [("FINISHED",)]
    started = time.monotonic()
    records.end_run(store, run.run_id, "KILLED", "stopped", attempts=1)
    assert time.monotonic() - started < 5
    assert reader.execute("SELECT status FROM runs").fetchall() == [("FINISHED",)]  # its snapshot
    reader.execute("COMMIT")
    assert reader.execute("SELECT status FROM runs").fetchall() == [("KILLED",)]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_revision", "not_empty"])
def test_an_unsound_schema_template_is_moved_aside_and_made_again(tmp_path, monkeypatch, caplog,
                                                                  damage):
    """A bad file in the user's cache never breaks a new store: it is named, moved aside and
    made again, and the new store is MLflow's own schema."""
    import sqlite3

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    connection.get_client(f"sqlite:///{tmp_path / 'first' / 'x.db'}")
    template = connection.schema_template()
    good = template.read_bytes()
    if damage == "garbage":
        template.write_bytes(b"not a database at all" * 100)
    elif damage == "truncated":
        template.write_bytes(good[: len(good) // 3])
    else:
        with sqlite3.connect(template) as db:
            if damage == "other_revision":
                db.execute("UPDATE alembic_version SET version_num = 'abc123'")
            else:
                db.execute("INSERT INTO experiments (name, lifecycle_stage) VALUES ('x', 'active')")
    caplog.set_level("WARNING")
    client = connection.get_client(f"sqlite:///{tmp_path / 'second' / 'x.db'}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert "moved aside" in caplog.text and str(template) in caplog.text
    assert len(list(template.parent.glob("*.corrupt-*"))) == 1
    assert _schema(tmp_path / "first" / "x.db")[:2] == _schema(tmp_path / "second" / "x.db")[:2]
    assert connection.template_fault(template) is None
