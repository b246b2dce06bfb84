"""What a store already holds of a sweep's cells, read without writing anything (a dry run):
FINISHED cells, cells RUNNING under a live owner, and the epoch time of finished runs. An
embedded SQLite store is read through a copy (MLflow's client would create its schema, WAL
files or lock files next to the original); a server or another database is only queried."""

from __future__ import annotations

import contextlib
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from emergence_lab.store import sweeps
from emergence_lab.store.connection import get_client, sqlite_file
from emergence_lab.store.ledger import owner_alive


@dataclass
class Survey:
    finished: dict[str, str] = field(default_factory=dict)  # config_hash -> run name
    running: dict[str, str] = field(default_factory=dict)  # config_hash -> live owner
    epoch_s: float | None = None  # the median seconds of a finished run's last epoch


@contextlib.contextmanager
def readable_copy(uri: str) -> Iterator[str | None]:
    """A URI to query: a copy of an SQLite store (None when there is no store yet), else `uri`."""
    path = sqlite_file(uri)
    if path is None:
        yield uri
        return
    if not path.is_file():
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="emergence-lab-copy-") as tmp:
        for suffix in ("", "-wal"):  # the committed pages and those still in the WAL
            src = Path(f"{path}{suffix}")
            if src.is_file():
                shutil.copyfile(src, Path(tmp) / f"mlflow.db{suffix}")
        yield f"sqlite:///{tmp}/mlflow.db"


def survey(uri: str, experiment: str, stale_after_s: float, epoch_key: str) -> Survey:
    """What the store holds of the experiment's cells (the median of `epoch_key`, a finished
    run's last epoch time, for the estimate), nothing written to it."""
    out = Survey()
    with readable_copy(uri) as readable:
        if readable is None:
            return out
        finished = sweeps.finished_cells(readable, experiment)
        out.finished = {h: r.info.run_name for h, r in finished.items()}
        times = [r.data.metrics[epoch_key] for r in finished.values() if epoch_key in r.data.metrics]
        out.epoch_s = statistics.median(times) if times else None
        client = get_client(readable)
        exp = client.get_experiment_by_name(experiment)
        running = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'",
                                     max_results=50_000) if exp is not None else []
        for r in running:
            h = r.data.tags.get("config_hash")
            if h and r.data.tags.get("kind") != "sweep" and (alive := owner_alive(
                    r, stale_after_s))[0]:
                out.running[h] = alive[1]
    return out
