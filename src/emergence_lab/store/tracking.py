"""Everything that talks to MLflow: the store, sweeps (parent runs), runs, metrics, artifacts,
and the ledger that keeps two processes from training one cell.

The only module that imports mlflow. Runs are driven through MlflowClient with explicit run
ids (no fluent global state), so several runs can live in one process and in parallel jobs.

Ledger entries are atomic against the store itself (SQLite, PostgreSQL, an `mlflow server`), not a
local file: MLflow refuses to change a logged param, so logging a param that another process
logged first with another value fails, and whoever logged it first holds it. The ledger of an
experiment are params of one run in the experiment `emergence-lab-claims`; that run is found
through a deleted (hidden) experiment whose name is unique and whose tags are written with it
in one step.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

# Artifact downloads here are small JSON files: no progress bar in the report's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from emergence_lab import procs  # noqa: E402
from emergence_lab.procs import pid_alive  # noqa: E402

log = logging.getLogger(__name__)
T = TypeVar("T")

PARENT_TAG = "mlflow.parentRunId"
MAX_ERROR_CHARS = 4000


def resolve_uri(uri: str) -> str:
    """The tracking URI with a relative SQLite path made absolute (and its folder created)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if uri.startswith("sqlite:////"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def local_store_dir(uri: str) -> Path | None:
    """The folder of an embedded SQLite store, None for a server or another database."""
    uri = resolve_uri(uri)
    return Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None


def _retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Call fn, retrying with jittered backoff while SQLite reports a lock (through MLflow, or
    as sqlalchemy's OperationalError while a store object checks its schema)."""
    for i in range(attempts):
        try:
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

    store = local_store_dir(uri)
    with FileLock(str(store / ".schema.lock")):
        # another process writing (a sweep beside this one) can hold the lock for a moment
        _retry(lambda: MlflowClient(tracking_uri=uri).search_experiments(max_results=1))


def get_client(uri: str) -> MlflowClient:
    """A client for the store at `uri`; creates an embedded SQLite store's schema if needed."""
    uri = resolve_uri(uri)
    if local_store_dir(uri) is not None:
        _schema_ready(uri)
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str) -> str:
    """The id of experiment `name`, created (with its artifact root next to a local store)."""
    client = get_client(uri)
    store = local_store_dir(uri)
    return _experiment_id(client, name, (store / "artifacts" / name).as_uri() if store else None)


def _experiment_id(client: MlflowClient, name: str, location: str | None = None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        # The kind tag opens the experiment in the UI's model-training view, not the GenAI one.
        return client.create_experiment(name, artifact_location=location,
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    except MlflowException:  # created meanwhile by a parallel job
        return client.get_experiment_by_name(name).experiment_id


def start_sweep(uri: str, experiment: str, name: str, tags: Mapping[str, str]) -> str:
    """Create the parent run of a multirun; returns its id."""
    exp_id = ensure_experiment(uri, experiment)
    run = get_client(uri).create_run(exp_id, run_name=name, tags={"kind": "sweep", **tags})
    return run.info.run_id


def open_sweep(uri: str, experiment: str, name: str, sweep_hash: str,
               tags: Mapping[str, str]) -> str:
    """The parent run of the sweep with these cells: reopened if it exists, else created. Two
    launchers of the same sweep get the same parent (entered in the store's ledger). A FINISHED parent
    stays FINISHED: its cells are all finished, whatever a rerun does."""
    client = get_client(uri)
    exp_id = ensure_experiment(uri, experiment)
    attempt, run_id = latest_entry(uri, exp_id, f"sweep.{sweep_hash}")
    if run_id is None or client.get_run(run_id).info.lifecycle_stage == "deleted":
        found = client.search_runs([exp_id], f"tags.kind = 'sweep' and tags.sweep_hash = '{sweep_hash}'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
        mine = found[0].info.run_id if found else start_sweep(
            uri, experiment, name, {**tags, "sweep_hash": sweep_hash})
        run_id = set_once(uri, exp_id, f"sweep.{sweep_hash}.{attempt + 1}", mine)
        if run_id != mine and not found:
            _retry(lambda: client.delete_run(mine))  # another launcher's parent won
    if client.get_run(run_id).info.status != "FINISHED":
        _retry(lambda: client.update_run(run_id, status="RUNNING"))
    # when it was last opened: a reopened sweep is the latest one (make report after make sweep)
    _retry(lambda: client.set_tag(run_id, OPENED_TAG, f"{time.time():.3f}"))
    return run_id


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


def check_reachable(uri: str) -> None:
    """Raise ValueError naming the URI when a tracking server does not answer, or the path when
    an embedded store cannot be written."""
    if not uri.startswith(("http://", "https://")):
        _check_writable_store(uri)
        return
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).read()
    except OSError as exc:
        raise ValueError(f"tracking.uri={uri} cannot be reached ({exc}); start the server "
                         "(make server) or use the embedded store sqlite:///mlruns/mlflow.db") from None


def end_sweep(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """End a parent run. Its status only moves towards FINISHED: a FINISHED parent is never
    changed, and FAILED or KILLED replace only RUNNING (a concurrent launcher of the same sweep
    that was interrupted does not stop the one that finishes it)."""
    client = get_client(uri)
    now = client.get_run(run_id).info.status
    if now != "FINISHED" and (status == "FINISHED" or now == "RUNNING"):
        _retry(lambda: client.set_terminated(run_id, status))


# ---- the ledger and ownership -------------------------------------------------------------------

LEDGER_EXPERIMENT = "emergence-lab-claims"  # one ledger run per experiment (a stored name)
LEDGER_ANCHOR = ".emergence-lab-claims/{}"  # a deleted experiment per experiment id
LEASE_PREFIX = "lease."  # lease.<n> = "<host>:<pid>:<nonce>@<unix time>": run owners, in order
HEARTBEAT_TAG = "owner.heartbeat"  # "<owner> <unix time>", refreshed while the owner trains
OWNER_TAG = "owner"
_LEDGER_RUNS: dict[tuple[str, str], str] = {}  # (store, experiment id) -> ledger run id


class LeaseLost(RuntimeError):
    """Another process took over the run this one was training (it was thought dead)."""


def owner_token() -> str:
    """Who this process is: host, pid and a nonce (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _ledger_run(client: MlflowClient, exp_id: str) -> str:
    """The run whose params hold the experiment's ledger, created by the first caller (it never
    changes: looked up once per store and experiment)."""
    key = (client.tracking_uri, exp_id)
    if key not in _LEDGER_RUNS:
        _LEDGER_RUNS[key] = _find_or_make_ledger_run(client, exp_id)
    return _LEDGER_RUNS[key]


def _find_or_make_ledger_run(client: MlflowClient, exp_id: str) -> str:
    name = LEDGER_ANCHOR.format(exp_id)
    anchor = client.get_experiment_by_name(name)
    if anchor is None:
        home = _experiment_id(client, LEDGER_EXPERIMENT)
        run = _retry(lambda: client.create_run(home, run_name=f"claims-of-experiment-{exp_id}", tags={
            "kind": "claims", "experiment_id": exp_id, "mlflow.note.content": "Which run "
            "trains each cell of experiment " f"{exp_id} (params cell.<config_hash>.<attempt>) "
            "and each sweep's parent run (sweep.<sweep_hash>.<attempt>)."}))
        _retry(lambda: client.set_terminated(run.info.run_id, "FINISHED"))
        try:  # the name is unique, and the tag is written with it: one winner
            anchor_id = _retry(lambda: client.create_experiment(
                name, tags={"ledger_run": run.info.run_id}))
            _retry(lambda: client.delete_experiment(anchor_id))  # hidden; name and tags stay
        except MlflowException:
            if client.get_experiment_by_name(name) is None:
                raise
            _retry(lambda: client.delete_run(run.info.run_id))
        anchor = client.get_experiment_by_name(name)
    return anchor.tags["ledger_run"]


def set_once(uri: str, exp_id: str, key: str, value: str) -> str:
    """Set `key` to `value` in the experiment's ledger unless another value holds it; returns
    the value that holds (atomic against the store)."""
    client = get_client(uri)
    registry = _ledger_run(client, exp_id)
    try:
        _retry(lambda: client.log_param(registry, key, value))
        return value
    except MlflowException:
        held = client.get_run(registry).data.params.get(key)
        if held is None:
            raise
        return held


def entries(uri: str, exp_id: str, prefix: str) -> dict[str, str]:
    """The experiment's ledger entries whose key starts with `prefix`."""
    client = get_client(uri)
    params = client.get_run(_ledger_run(client, exp_id)).data.params
    return {k: v for k, v in params.items() if k.startswith(prefix)}


def _highest(params: Mapping[str, str], prefix: str) -> tuple[int, str | None]:
    """(n, value) of the param `<prefix><n>` with the highest n; (0, None) when there is none."""
    numbered = [(int(k[len(prefix):]), v) for k, v in params.items()
                if k.startswith(prefix) and k[len(prefix):].isdigit()]
    return max(numbered) if numbered else (0, None)


def latest_entry(uri: str, exp_id: str, key: str) -> tuple[int, str | None]:
    """(attempt, value) of the highest `<key>.<attempt>` entry; (0, None) when there is none."""
    return _highest(entries(uri, exp_id, f"{key}."), f"{key}.")


def lease_holder(run: Any) -> tuple[int, str | None, float]:
    """(generation, owner, time the lease was taken) of a run; (0, None, 0) for none."""
    gen, value = _highest(run.data.params, LEASE_PREFIX)
    if value is None:
        return 0, None, 0.0
    owner, _, since = value.rpartition("@")
    return gen, owner, float(since)


def local_pid(owner: str) -> int | None:
    """The pid of an owner that is a process of this host, None for another host's."""
    host, pid, _ = owner.split(":")
    return int(pid) if host == socket.gethostname() else None


def take_lease(uri: str, run_id: str, owner: str) -> bool:
    """Become the run's owner, unless another process became it first (atomic)."""
    client = get_client(uri)
    gen = lease_holder(client.get_run(run_id))[0] + 1
    try:
        _retry(lambda: client.log_param(run_id, f"{LEASE_PREFIX}{gen}", f"{owner}@{time.time():.3f}"))
    except MlflowException:
        return False
    _retry(lambda: client.set_tag(run_id, OWNER_TAG, owner))
    return True


def running_owners(uri: str, parent_run_id: str) -> dict[str, str]:
    """run id -> owner of a sweep's children that are RUNNING."""
    return {r.info.run_id: owner for r in sweep_children(uri, parent_run_id)
            if r.info.status == "RUNNING" for _, owner, _ in [lease_holder(r)] if owner}


def owner_alive(run: Any, stale_after_s: float) -> tuple[bool, str]:
    """Whether a RUNNING run's owner still trains it, and who that is. An owner is dead when its
    heartbeat is older than stale_after_s, or at once when it is a dead process of this host."""
    if run.info.status != "RUNNING":
        return False, ""
    _, owner, since = lease_holder(run)
    if owner is None and OWNER_TAG in run.data.tags:  # created, its first lease not yet logged
        owner, since = run.data.tags[OWNER_TAG], run.info.start_time / 1000
    if owner is None:  # a run from before ownership: its process is gone, or it would own it
        return False, ""
    beat_owner, _, beat = run.data.tags.get(HEARTBEAT_TAG, " 0").rpartition(" ")
    last = max(since, float(beat) if beat_owner == owner else 0.0)
    pid = local_pid(owner)
    if pid is not None and not pid_alive(pid):
        return False, owner
    return time.time() - last <= stale_after_s, owner


def sweep_children(uri: str, parent_run_id: str) -> list[Any]:
    """The child runs of a sweep, oldest first."""
    client = get_client(uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=10000)


def sweep_runs(uri: str, parent_run_id: str, config_hashes: list[str] | None = None) -> list[Any]:
    """A sweep's runs, oldest first: its children, and FINISHED runs elsewhere in the experiment
    of the cells it names that it has no FINISHED run of (a rerun skips cells finished by
    another sweep). A cell may have several runs (retries, force=true): see report.dedupe."""
    client = get_client(uri)
    runs = sweep_children(uri, parent_run_id)
    have = {r.data.tags.get("config_hash") for r in runs if r.info.status == "FINISHED"}
    exp_id = client.get_run(parent_run_id).info.experiment_id
    for h in sorted(set(config_hashes or []) - have):
        runs += client.search_runs([exp_id], f"tags.config_hash = '{h}' and "
                                   "attributes.status = 'FINISHED'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
    return sorted(runs, key=lambda r: r.info.start_time)


def find_run(uri: str, run_id: str) -> Any | None:
    """A run by id, None when the store has none."""
    try:
        return get_client(uri).get_run(run_id)
    except MlflowException:
        return None


OPENED_TAG = "opened_at"  # a sweep parent's last opening (seconds since the epoch)


def latest_sweep(uri: str) -> Any | None:
    """The sweep parent most recently started or reopened in the store, or None."""
    client = get_client(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, filter_string="tags.kind = 'sweep'",
                              max_results=5000) if exps else []

    def opened(run: Any) -> float:
        return max(run.info.start_time / 1000, float(run.data.tags.get(OPENED_TAG, 0)))

    return max(runs, key=opened) if runs else None


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric of one run, by step."""
    return sorted((m.step, m.value) for m in get_client(uri).get_metric_history(run_id, key))


def finished_cells(uri: str, experiment: str) -> dict[str, Any]:
    """config_hash -> a FINISHED training run of the experiment (the newest), in one paged
    query; {} when the experiment does not exist yet."""
    client = get_client(uri)
    exp = _retry(lambda: client.get_experiment_by_name(experiment))
    if exp is None:
        return {}
    out: dict[str, Any] = {}
    for r in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'",
                                order_by=["attributes.start_time ASC"], max_results=50_000):
        h = r.data.tags.get("config_hash")
        if h and r.data.tags.get("kind") != "sweep":
            out[h] = r
    return out


def find_runs(uri: str, exp_id: str, config_hash: str) -> list[Any]:
    """The training runs of an experiment (by id) with this config hash, newest first."""
    return get_client(uri).search_runs([exp_id], f"tags.config_hash = '{config_hash}'",
                                       order_by=["attributes.start_time DESC"], max_results=1000)


def set_run_tags(uri: str, run_id: str, tags: Mapping[str, Any]) -> None:
    """Tags of any run (a FINISHED one included)."""
    client = get_client(uri)
    for k, v in tags.items():
        _retry(lambda k=k, v=v: client.set_tag(run_id, k, str(v)))


def log_series(uri: str, run_id: str, series: Mapping[str, list[tuple[int, float]]]) -> None:
    """Metric histories added to any run (a FINISHED one included): key -> [(step, value)]."""
    client = get_client(uri)
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, points in series.items() for step, v in points]
    for start in range(0, len(items), 1000):  # MLflow's batch limit
        _retry(lambda start=start: client.log_batch(run_id, metrics=items[start:start + 1000]))


def artifact_names(uri: str, run_id: str, folder: str) -> list[str]:
    """The file names in one artifact folder of a run ([] when it has none)."""
    return [a.path.rsplit("/", 1)[-1] for a in get_client(uri).list_artifacts(run_id, folder)
            if not a.is_dir]


def download_folder(uri: str, run_id: str, folder: str, dest: str | Path) -> Path:
    """A run's artifact folder copied into dest."""
    return Path(get_client(uri).download_artifacts(run_id, folder, str(dest)))


def download_artifact(uri: str, run_id: str, path: str, dest: str | Path) -> Path | None:
    """A run's artifact copied into dest, None when the run has no such artifact."""
    client = get_client(uri)
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    if path not in {a.path for a in client.list_artifacts(run_id, folder or None)}:
        return None
    return Path(client.download_artifacts(run_id, path, str(dest)))


class Run:
    """One tracked run, owned by this process: use as a context manager; the exit sets
    FINISHED, FAILED or KILLED (nothing when another process took the run over).

    Created fresh, or with `run_id` one that `create_owned_run` made or whose lease this process
    took (`resumed`: it is set RUNNING again and metrics already logged at a step are not logged
    twice). While it is open, a thread refreshes its heartbeat every `heartbeat_s` seconds.
    """

    def __init__(self, uri: str, experiment: str, name: str, tags: Mapping[str, str],
                 parent_run_id: str | None = None, run_id: str | None = None,
                 owner: str | None = None, resumed: bool = False, heartbeat_s: float = 30.0):
        self.client = get_client(uri)
        self.logged: dict[str, int] = {}  # metric -> last step already in the store
        self.owner = owner or owner_token()
        self.heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        if run_id is None:
            run_id = create_owned_run(uri, experiment, name, tags, parent_run_id, self.owner)
        self.run_id = run_id
        if resumed:
            run = self.client.get_run(run_id)
            for key in run.data.metrics:
                steps = [m.step for m in self.client.get_metric_history(run_id, key)]
                self.logged[key] = max(steps, default=-1)
            _retry(lambda: self.client.update_run(run_id, status="RUNNING"))
            self.set_tags({**tags, "resumed": int(run.data.tags.get("resumed", 0)) + 1})
        self.beat()

    def __enter__(self) -> Run:
        threading.Thread(target=self._beat_until_closed, daemon=True).start()
        return self

    def _beat_until_closed(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
            except Exception as exc:  # a store hiccup: the next beat or epoch tries again
                log.warning("heartbeat of run %s failed: %s", self.run_id, exc)

    def beat(self) -> None:
        """Refresh the heartbeat that tells other processes this run is being trained."""
        _retry(lambda: self.client.set_tag(self.run_id, HEARTBEAT_TAG,
                                           f"{self.owner} {time.time():.3f}"))

    def check_owner(self) -> None:
        """Raise LeaseLost when another process has taken the run over; else beat."""
        _, holder, _ = lease_holder(self.client.get_run(self.run_id))
        if holder is not None and holder != self.owner:
            raise LeaseLost(f"run {self.run_id} was taken over by {holder} (this process, "
                            f"{self.owner}, was thought dead); stopping without logging")
        self.beat()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stop.set()
        if exc_type is not None and issubclass(exc_type, LeaseLost):
            return False  # the run is someone else's now
        if exc_type is None:
            status = "FINISHED"
        else:
            stopped = issubclass(exc_type, KeyboardInterrupt) or procs.stop_requested.is_set()
            status = "KILLED" if stopped else "FAILED"
            message = f"{exc_type.__name__}: {exc}"[:MAX_ERROR_CHARS]
            if exc is not None:
                exc.mlflow_run_id = self.run_id  # lets a sweep tell a run's failure from a bug
            self.set_tags({"error": message})
            _retry(lambda: self.client.set_tag(self.run_id, "mlflow.note.content",
                                               f"**{status}**: {message}"))
        _retry(lambda: self.client.set_terminated(self.run_id, status))
        if procs.stop_requested.is_set():
            procs.stopped_run_closed.set()
        return False

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow accepts 100 params per batch
            _retry(lambda i=i: self.client.log_batch(self.run_id, params=items[i:i + 100]))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        _retry(lambda: self.client.log_batch(self.run_id, tags=items))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if step > self.logged.get(k, -1)]
        if items:
            _retry(lambda: self.client.log_batch(self.run_id, metrics=items))

    def log_text(self, text: str, artifact_file: str) -> None:
        _retry(lambda: self.client.log_text(self.run_id, text, artifact_file))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        _retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))


def create_owned_run(uri: str, experiment: str, name: str, tags: Mapping[str, Any],
                     parent_run_id: str | None, owner: str) -> str:
    """A new RUNNING run holding its first lease (owner); returns its id."""
    client = get_client(uri)
    exp_id = ensure_experiment(uri, experiment)
    tags = {k: str(v) for k, v in tags.items()}  # a server takes strings only
    tags.update({PARENT_TAG: parent_run_id} if parent_run_id else {})
    tags[OWNER_TAG] = owner
    run_id = _retry(lambda: client.create_run(exp_id, run_name=name, tags=tags)).info.run_id
    _retry(lambda: client.log_param(run_id, f"{LEASE_PREFIX}1", f"{owner}@{time.time():.3f}"))
    return run_id


def delete_run(uri: str, run_id: str) -> None:
    """Soft-delete a run (a losing candidate for a cell): hidden from searches and the UI."""
    client = get_client(uri)
    _retry(lambda: client.delete_run(run_id))


def default_cache_dir(uri: str) -> Path:
    """Where siblings share pre-prune states: next to a local store, else ./mlruns/cache."""
    store = local_store_dir(uri)
    return (store if store else Path("mlruns").resolve()) / "cache"


def experiment_runs(uri: str, experiment: str) -> list[Any]:
    """The training runs of an experiment (no sweep parents, no reports), oldest first."""
    client = get_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"],
                              max_results=10000)
    return [r for r in runs if r.data.tags.get("kind") not in ("sweep", "report", "claims")]


def metric_histories(uri: str, run_ids: list[str], keys: list[str],
                     workers: int = 16) -> list[tuple[str, str, int, float]]:
    """(run_id, key, step, value) of many runs and metrics, fetched concurrently."""
    client = get_client(uri)

    def one(pair: tuple[str, str]) -> list[tuple[str, str, int, float]]:
        rid, key = pair
        return [(rid, key, m.step, m.value) for m in client.get_metric_history(rid, key)]

    pairs = [(rid, key) for rid in run_ids for key in keys]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [row for rows in pool.map(one, pairs) for row in rows]


def log_json(uri: str, run_id: str, obj: Any, artifact_file: str) -> None:
    """Write a JSON artifact to a run."""
    client = get_client(uri)
    _retry(lambda: client.log_text(run_id, json.dumps(obj, indent=1), artifact_file))


def load_json(uri: str, run_id: str, artifact_file: str) -> Any | None:
    """A JSON artifact of a run, None when it has none."""
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifact(uri, run_id, artifact_file, tmp)
        return json.loads(path.read_text()) if path else None


def log_report(uri: str, experiment_id: str, name: str, source_run_ids: list[str],
               out_dir: Path, tags: Mapping[str, str]) -> str:
    """Record a report as a run (tag kind=report) with its files as artifacts; returns its id."""
    client = get_client(uri)
    run = _retry(lambda: client.create_run(experiment_id, run_name=name,
                                           tags={"kind": "report", **tags}))
    rid = run.info.run_id
    log_json(uri, rid, source_run_ids, "source_runs.json")
    _retry(lambda: client.set_tag(rid, "source_run_ids", ",".join(source_run_ids)[:5000]))
    _retry(lambda: client.log_artifacts(rid, str(out_dir), "report"))
    _retry(lambda: client.set_terminated(rid, "FINISHED"))
    return rid


DEFAULT_UI = "http://127.0.0.1:5000"  # where `make ui` serves an embedded store


def ui_address(uri: str, ui: str | None = None) -> str:
    """The MLflow UI's address for a store: `ui` when given, the server itself for an http(s)
    tracking URI, else where `make ui` serves."""
    if ui:
        return ui.rstrip("/")
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else DEFAULT_UI


def run_page(ui: str, experiment_id: str, run_id: str, path: str = "") -> str:
    """A run's page in the MLflow UI (path: e.g. artifactPath/report/report.html)."""
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}" + (f"/{path}" if path else "")


def sweep_page(ui: str, experiment_id: str, parent_run_id: str) -> str:
    """The runs table of an experiment filtered to one sweep's runs (its parent's children)."""
    query = quote(f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    # isPreview: the UI applies a filter from the URL only with it (as its own links do)
    return f"{ui}/#/experiments/{experiment_id}/runs?searchFilter={query}&isPreview=true"


def set_note(uri: str, run_id: str, markdown: str) -> None:
    """The run's description, the note the MLflow UI shows on its page."""
    client = get_client(uri)
    _retry(lambda: client.set_tag(run_id, "mlflow.note.content", markdown[:60000]))
