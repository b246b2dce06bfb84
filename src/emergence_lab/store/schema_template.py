"""A new embedded store starts as a copy of MLflow's empty schema, kept once per MLflow version
in the user's cache. A template that is not a sound copy of this version's schema (truncated,
edited, written by another MLflow) is moved aside, named in a warning, and made again: a bad
file in the cache never breaks a new store."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

log = logging.getLogger(__name__)


def schema_template() -> Path:
    """Where the empty schema of this MLflow version is kept (the user's cache)."""
    import mlflow

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "emergence-lab" / f"mlflow-{mlflow.__version__}-empty-store.db"


def from_template(path: Path) -> None:
    """A new embedded store starts as a copy of MLflow's empty schema, made once per MLflow
    version: running its 50-odd migrations costs each new store 1.6 s of CPU, a copy a few
    milliseconds. The template holds the tables only; MLflow adds the Default experiment, with
    this store's artifact folder, when it first opens the copy. Where the template cannot be
    made or copied, MLflow creates the schema itself, as before."""
    if path.exists():
        return
    template = schema_template()
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fault = template_fault(template) if template.is_file() else None
        if fault is not None:  # moved aside (kept for a look), then made again
            aside = template.with_name(f"{template.name}.corrupt-{int(time.time())}")
            os.replace(template, aside)
            log.warning("the schema template %s was unsound (%s): moved aside as %s and made "
                        "again", template, fault, aside.name)
        if not template.is_file():
            _make_template(template)
        shutil.copyfile(template, partial)
        os.replace(partial, path)  # all of it or nothing, under the caller's schema lock
    except Exception as exc:  # a read-only cache, a full disk, MLflow's helper gone: the slow way
        with contextlib.suppress(OSError):
            partial.unlink()
        log.debug("no schema template for %s (%s): MLflow creates the schema", path, exc)


def _make_template(template: Path) -> None:
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables  # tables and migrations, no experiment

    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_name(f"{template.name}.{os.getpid()}.partial")
    engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
    try:
        _initialize_tables(engine)
        os.replace(partial, template)  # processes making it at once: one complete file wins
    finally:
        engine.dispose()
        with contextlib.suppress(OSError):
            partial.unlink()


def template_fault(template: Path) -> str | None:
    """Why `template` is not a sound empty schema of this MLflow version; None when it is."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    try:
        with contextlib.closing(sqlite3.connect(f"file:{template}?mode=ro", uri=True)) as db:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                return f"PRAGMA quick_check: {check}"
            (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            rows = db.execute("SELECT count(*) FROM runs").fetchone()[0] + \
                db.execute("SELECT count(*) FROM experiments").fetchone()[0]
    except (sqlite3.Error, TypeError) as exc:  # not a database, a table missing, no version row
        return f"{type(exc).__name__}: {exc}"
    if version != _get_latest_schema_revision():
        return f"schema revision {version}, this MLflow's is {_get_latest_schema_revision()}"
    if not {"runs", "experiments", "metrics", "params", "tags"} <= tables or rows:
        return "not an empty MLflow schema"
    return None


def default_next_to_store(path: Path) -> None:
    """MLflow gives a new store's Default experiment an artifact folder under the current
    directory (./mlruns/0), wherever the store is: a store made from elsewhere would scatter its
    Default runs' files there. It is moved next to the store (its artifacts/0), as the tool's own
    experiments are, while it holds no run."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0 AND "
                   "NOT EXISTS (SELECT 1 FROM runs WHERE experiment_id = 0)",
                   (str(path.resolve().parent / "artifacts" / "0"),))
