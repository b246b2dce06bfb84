"""Everything that talks to MLflow: the store, sweeps (parent runs), runs, metrics, artifacts.

The only module that imports mlflow. Runs are driven through MlflowClient with explicit run
ids (no fluent global state), so several runs can live in one process and in parallel jobs.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

# Artifact downloads here are small JSON files: no progress bar in the report's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

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
    """Call fn, retrying with jittered backoff while SQLite reports a lock."""
    for i in range(attempts):
        try:
            return fn()
        except MlflowException as exc:
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(min(0.1 * 2**i, 5.0) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def get_client(uri: str) -> MlflowClient:
    """A client for the store at `uri`; creates an embedded SQLite store's schema if needed."""
    return MlflowClient(tracking_uri=resolve_uri(uri))


def ensure_experiment(uri: str, name: str) -> str:
    """The id of experiment `name`, created (with its artifact root next to a local store)."""
    client = get_client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    store = local_store_dir(uri)
    location = (store / "artifacts" / name).as_uri() if store else None
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
    """The parent run of the sweep with these cells: reopened if it exists, else created."""
    client = get_client(uri)
    exp_id = ensure_experiment(uri, experiment)
    found = client.search_runs([exp_id], f"tags.kind = 'sweep' and tags.sweep_hash = '{sweep_hash}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    if found:
        run_id = found[0].info.run_id
        _retry(lambda: client.update_run(run_id, status="RUNNING"))
        return run_id
    return start_sweep(uri, experiment, name, {**tags, "sweep_hash": sweep_hash})


def check_reachable(uri: str) -> None:
    """Raise ValueError naming the URI when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        resolve_uri(uri)  # creates an embedded store's folder, or fails on it
        return
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).read()
    except OSError as exc:
        raise ValueError(f"tracking.uri={uri} cannot be reached ({exc}); start the server "
                         "(make server) or use the embedded store sqlite:///mlruns/mlflow.db") from None


def end_sweep(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Terminate a parent run, unless it already ended."""
    client = get_client(uri)
    if client.get_run(run_id).info.status == "RUNNING":
        _retry(lambda: client.set_terminated(run_id, status))


def sweep_children(uri: str, parent_run_id: str) -> list[Any]:
    """The child runs of a sweep, oldest first."""
    client = get_client(uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=10000)


def sweep_runs(uri: str, parent_run_id: str, config_hashes: list[str] | None = None) -> list[Any]:
    """A sweep's runs: its children, and FINISHED runs elsewhere in the experiment of the cells
    it names (a rerun skips cells finished by another sweep); one run per cell, a FINISHED one
    when there is one, else the newest."""
    client = get_client(uri)
    runs = sweep_children(uri, parent_run_id)
    have = {r.data.tags.get("config_hash") for r in runs if r.info.status == "FINISHED"}
    exp_id = client.get_run(parent_run_id).info.experiment_id
    for h in sorted(set(config_hashes or []) - have):
        runs += client.search_runs([exp_id], f"tags.config_hash = '{h}' and "
                                   "attributes.status = 'FINISHED'", max_results=1)
    best: dict[str, Any] = {}
    for r in sorted(runs, key=lambda r: (r.info.status == "FINISHED", r.info.start_time)):
        best[r.data.tags.get("config_hash") or r.info.run_id] = r  # the last wins
    return sorted(best.values(), key=lambda r: r.info.start_time)


def latest_sweep(uri: str) -> Any | None:
    """The most recently started parent run in the store, or None."""
    client = get_client(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, filter_string="tags.kind = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1) if exps else []
    return runs[0] if runs else None


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric of one run, by step."""
    return sorted((m.step, m.value) for m in get_client(uri).get_metric_history(run_id, key))


def find_runs(uri: str, experiment: str, config_hash: str) -> list[Any]:
    """The training runs of an experiment with this config hash, newest first."""
    client = get_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], f"tags.config_hash = '{config_hash}'",
                              order_by=["attributes.start_time DESC"], max_results=1000)


def download_artifact(uri: str, run_id: str, path: str, dest: str | Path) -> Path | None:
    """A run's artifact copied into dest, None when the run has no such artifact."""
    client = get_client(uri)
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    if path not in {a.path for a in client.list_artifacts(run_id, folder or None)}:
        return None
    return Path(client.download_artifacts(run_id, path, str(dest)))


class Run:
    """One tracked run: use as a context manager; the exit sets FINISHED, FAILED or KILLED.

    With `resume_run_id`, the run is an interrupted one continued: it is set RUNNING again and
    metrics already logged at a step are not logged twice.
    """

    def __init__(self, uri: str, experiment: str, name: str, tags: Mapping[str, str],
                 parent_run_id: str | None = None, resume_run_id: str | None = None):
        self.client = get_client(uri)
        self.logged: dict[str, int] = {}  # metric -> last step already in the store
        if resume_run_id:
            self.run_id = resume_run_id
            run = self.client.get_run(resume_run_id)
            for key in run.data.metrics:
                steps = [m.step for m in self.client.get_metric_history(resume_run_id, key)]
                self.logged[key] = max(steps, default=-1)
            _retry(lambda: self.client.update_run(resume_run_id, status="RUNNING"))
            self.set_tags({**tags, "resumed": int(run.data.tags.get("resumed", 0)) + 1})
            return
        exp_id = ensure_experiment(uri, experiment)
        tags = {k: str(v) for k, v in tags.items()}  # a server takes strings only
        tags.update({PARENT_TAG: parent_run_id} if parent_run_id else {})
        self.run_id = _retry(lambda: self.client.create_run(exp_id, run_name=name, tags=tags)
                             ).info.run_id

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            status = "FINISHED"
        else:
            status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
            message = f"{exc_type.__name__}: {exc}"[:MAX_ERROR_CHARS]
            if exc is not None:
                exc.mlflow_run_id = self.run_id  # lets a sweep tell a run's failure from a bug
            self.set_tags({"error": message})
            _retry(lambda: self.client.set_tag(self.run_id, "mlflow.note.content",
                                               f"**{status}**: {message}"))
        _retry(lambda: self.client.set_terminated(self.run_id, status))
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
    return [r for r in runs if r.data.tags.get("kind") not in ("sweep", "report")]


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
