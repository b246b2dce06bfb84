"""The connection to an MLflow store: URIs (relative SQLite paths made absolute), the client (an
embedded store's schema created once under a file lock), retries while SQLite is locked,
experiments, and the checks that a store can be reached and written.

Runs are driven through MlflowClient with explicit run ids (no fluent global state), so several
runs can live in one process and in parallel jobs. The store modules are the only ones that import
mlflow.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

# Artifact downloads here are small JSON files: no progress bar in the report's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from emergence_lab.procs import store_call  # noqa: E402
from emergence_lab.store.schema_template import (  # noqa: E402, F401
    default_next_to_store,
    from_template,
    schema_template,
    template_fault,
)

if TYPE_CHECKING:  # mlflow is imported where a store is used: a config error needs none of it
    from mlflow.tracking import MlflowClient

T = TypeVar("T")
log = logging.getLogger(__name__)


# The layout of what this code writes; older experiments are brought up to it by
# scripts/migrate_store.py (run.migrate), which tags them with it.
STORE_VERSION_TAG = "emergence_lab.store_version"
STORE_VERSION = "2"


def resolve_uri(uri: str) -> str:
    """The tracking URI with a relative SQLite path made absolute (and its folder created)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if uri.startswith("sqlite:////"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def sqlite_file(uri: str) -> Path | None:
    """The absolute path of an embedded SQLite store's file (which may not exist yet), None for
    a server or another database; nothing is created."""
    return Path(uri[len("sqlite:///"):]).resolve() if uri.startswith("sqlite:///") else None


def local_store_dir(uri: str) -> Path | None:
    """The folder of an embedded SQLite store, None for a server or another database."""
    uri = resolve_uri(uri)
    return Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None


def retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Call fn, retrying with jittered backoff while SQLite reports a lock (through MLflow, or
    as sqlalchemy's OperationalError while a store object checks its schema)."""
    for i in range(attempts):
        try:
            with store_call():  # a stop signal waits for the call to return
                return fn()
        except Exception as exc:
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(min(0.1 * 2**i, 5.0) * (0.5 + random.random()))
    raise AssertionError("unreachable")


@functools.cache
def _schema_ready(uri: str) -> None:
    """Create an embedded store's schema under a file lock: two processes opening a fresh
    store at once would otherwise both run MLflow's migrations, and one fails."""
    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    path = Path(uri[len("sqlite:///"):])
    with FileLock(str(path.parent / ".schema.lock")):
        new = not path.exists()
        from_template(path)
        # another process writing (a sweep beside this one) can hold the lock for a moment
        retry(lambda: MlflowClient(tracking_uri=uri).search_experiments(max_results=1))
        if new:
            default_next_to_store(path)
        _write_ahead_log(path)


def _write_ahead_log(path: Path) -> None:
    """Put an SQLite store in write-ahead-log mode (kept in the file: once per store). In the
    default rollback journal a reader blocks a writer's commit and a pending commit blocks new
    readers: seen here as a worker closing its run (MLflow's log_batch, which opens a second
    connection for the tags) and its launcher reading the same run, both in SQLite's busy
    wait for over a minute after Ctrl-C. With the log, readers and writers never wait for
    each other; writers take turns."""
    import sqlite3

    con = sqlite3.connect(path, timeout=20)
    try:
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.OperationalError as exc:  # busy for 20 s: the next process tries again
        mode = str(exc)
    finally:
        con.close()
    if mode != "wal":
        log.warning(
            "the store %s stays in journal mode %s (write-ahead log not enabled)", path, mode)


def get_client(uri: str) -> MlflowClient:
    """A client for the store at `uri`; creates an embedded SQLite store's schema if needed."""
    from mlflow.tracking import MlflowClient

    uri = resolve_uri(uri)
    if local_store_dir(uri) is not None:
        _schema_ready(uri)
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str) -> str:
    """The id of experiment `name`, created (with its artifact root next to a local store)."""
    client = get_client(uri)
    store = local_store_dir(uri)
    return experiment_id(client, name, (store / "artifacts" / name).as_uri() if store else None)


def experiment_id(client: MlflowClient, name: str, location: str | None = None) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        # The kind tag opens the experiment in the UI's model-training view, not the GenAI one.
        return client.create_experiment(name, artifact_location=location,
                                        tags={"mlflow.experimentKind": "custom_model_development",
                                              STORE_VERSION_TAG: STORE_VERSION})
    except MlflowException:  # created meanwhile by a parallel job
        return client.get_experiment_by_name(name).experiment_id


def writable(uri: str) -> bool:
    """Whether this process can write the store (a server or database: taken as yes)."""
    try:
        _check_writable_store(uri)
    except ValueError:
        return False
    return True


def _check_writable_store(uri: str) -> None:
    """Raise ValueError naming the path when an embedded store cannot be written (SQLite would
    otherwise retry for minutes and then fail without naming it)."""
    path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if path is None:
        return
    path = path.resolve()
    hint = "; set tracking.uri=sqlite:///WRITABLE/PATH/mlflow.db"
    if path.is_dir():
        raise ValueError(f"tracking.uri={uri}: {path} is a directory, not an SQLite file{hint}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
        if path.exists():
            open(path, "r+b").close()
    except OSError as exc:
        raise ValueError(f"tracking.uri={uri}: the store {path} cannot be written "
                         f"({exc.strerror or exc}){hint}") from None


def needs_migration(uri: str, experiment_ids: list[str]) -> list[str]:
    """The names of these experiments that older code wrote (no current store-version tag)."""
    client = get_client(uri)
    exps = [client.get_experiment(e) for e in dict.fromkeys(experiment_ids)]
    return [e.name for e in exps if e.tags.get(STORE_VERSION_TAG) != STORE_VERSION]


SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql")  # what MLflow 3.13+ stores on
CONNECT_TIMEOUT_S = 5.0  # a server that does not answer in this long is reported, not waited for
MIN_FREE_BYTES = 20 * 2**20  # a store's disk with less free is full for our purposes


def check_scheme(uri: str) -> None:
    """ValueError for a URI whose scheme no store here speaks (before anything connects)."""
    if uri.startswith("file:"):
        raise ValueError(f"tracking.uri={uri}: MLflow 3.13+ refuses the file store; use an SQLite "
                         f"file, e.g. tracking.uri=sqlite:///mlruns/mlflow.db, or a server's "
                         f"http:// URI")
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if ":" in uri else ""
    if scheme not in SCHEMES:
        raise ValueError(f"tracking.uri={uri}: unknown scheme {scheme!r}; use one of "
                         f"sqlite:///PATH, http(s)://HOST:PORT (a tracking server), "
                         f"postgresql://... or mysql://...")


def check_reachable(uri: str) -> None:
    """Raise ValueError in one line, within seconds, when the store at `uri` cannot be used:
    an unknown scheme, a server or database that does not answer, an SQLite file that cannot
    be written, is not a database or is corrupt (PRAGMA quick_check), a disk that is full."""
    check_scheme(uri)
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif uri.startswith("sqlite:"):
        _check_writable_store(uri)
        _check_sqlite(uri)
    else:
        _check_database(uri)


def _check_server(uri: str) -> None:
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=CONNECT_TIMEOUT_S).read()
    except OSError as exc:
        raise ValueError(f"tracking.uri={uri} cannot be reached ({getattr(exc, 'reason', exc)}); "
                         "start the server (make server) or use the embedded store "
                         "sqlite:///mlruns/mlflow.db") from None


def _check_database(uri: str) -> None:
    """A database server (postgresql://, mysql://) that takes a TCP connection on its port."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    port = parts.port or {"postgresql": 5432, "mysql": 3306}[parts.scheme.split("+")[0]]
    try:
        socket.create_connection((parts.hostname or "localhost", port), CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ValueError(f"tracking.uri: the database server {parts.hostname}:{port} cannot be "
                         f"reached ({exc.strerror or exc}); start it (make server) or use "
                         f"sqlite:///mlruns/mlflow.db") from None


def _check_sqlite(uri: str) -> None:
    """An existing SQLite file that is a database and passes PRAGMA quick_check; a disk with
    room to write."""
    import sqlite3

    path = Path(resolve_uri(uri)[len("sqlite:///"):])
    free = shutil.disk_usage(path.parent).free
    if free < MIN_FREE_BYTES:
        raise ValueError(f"the disk holding the store {path.parent} is full ({free // 2**20} MiB "
                         f"free); free space there or point tracking.uri at another disk")
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        rows = [(str(exc),)]
    if rows != [("ok",)]:
        raise ValueError(f"the store {path} is not a usable SQLite database ({rows[0][0]}"
                         f"{f', and {len(rows) - 1} more problems' if len(rows) > 1 else ''}); "
                         f"restore it from a backup, or move it aside and rerun into a new store")


def default_cache_dir(uri: str) -> Path:
    """Where siblings share pre-prune states: next to a local store, else ./mlruns/cache."""
    store = local_store_dir(uri)
    return (store if store else Path("mlruns").resolve()) / "cache"
