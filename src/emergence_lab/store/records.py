"""Runs: an owned run as a context manager (params, tags, metrics, artifacts, the owner's
heartbeat, its status at exit), lookups by id and config hash, metric histories, notes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from emergence_lab import procs
from emergence_lab.store.connection import ensure_experiment, get_client, retry
from emergence_lab.store.ledger import (
    HEARTBEAT_TAG,
    LEASE_TAG,
    OWNER_TAG,
    PROGRESS_TAG,
    LeaseLost,
    lease_holder,
    lease_value,
    owner_token,
)
from emergence_lab.store.sweeps import PARENT_TAG

log = logging.getLogger(__name__)
T = TypeVar("T")


MAX_ERROR_CHARS = 4000
NOTE_TAG = "mlflow.note.content"  # a run's description in the MLflow UI
RESUMED_AFTER_TAG = "resumed_after"  # the interruptions a finished run was resumed after


def find_run(uri: str, run_id: str) -> Any | None:
    """A run by id, None when the store has none."""
    from mlflow.exceptions import MlflowException

    try:
        return get_client(uri).get_run(run_id)
    except MlflowException:
        return None


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric of one run, by step."""
    return sorted((m.step, m.value) for m in get_client(uri).get_metric_history(run_id, key))


def find_runs(uri: str, exp_id: str, config_hash: str) -> list[Any]:
    """The training runs of an experiment (by id) with this config hash, newest first."""
    return get_client(uri).search_runs([exp_id], f"tags.config_hash = '{config_hash}'",
                                       order_by=["attributes.start_time DESC"], max_results=1000)


def set_run_tags(uri: str, run_id: str, tags: Mapping[str, Any]) -> None:
    """Tags of any run (a FINISHED one included)."""
    client = get_client(uri)
    for k, v in tags.items():
        retry(lambda k=k, v=v: client.set_tag(run_id, k, str(v)))


def log_series(uri: str, run_id: str, series: Mapping[str, list[tuple[int, float]]]) -> None:
    """Metric histories added to any run (a FINISHED one included): key -> [(step, value)]."""
    from mlflow.entities import Metric

    client = get_client(uri)
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, points in series.items() for step, v in points]
    for start in range(0, len(items), 1000):  # MLflow's batch limit
        retry(lambda start=start: client.log_batch(run_id, metrics=items[start:start + 1000]))


DATASET_ATTEMPTS = 4  # logging a data set input that another run creates at the same moment


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
            retry(lambda: self.client.update_run(run_id, status="RUNNING"))
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
        retry(lambda: self.client.set_tag(self.run_id, HEARTBEAT_TAG,
                                           f"{self.owner} {time.time():.3f}"))

    def check_owner(self) -> None:
        """At the end of an epoch: raise LeaseLost when another process has taken the run over;
        else beat, and say that the run made progress (ledger.PROGRESS_TAG: an owner that
        finishes no epoch for tracking.stall_after_s is taken for stalled)."""
        from mlflow.entities import RunTag

        _, holder, _ = lease_holder(self.client.get_run(self.run_id))
        if holder is not None and holder != self.owner:
            raise LeaseLost(f"run {self.run_id} was taken over by {holder} (this process, "
                            f"{self.owner}, was thought dead); stopping without logging")
        now = f"{self.owner} {time.time():.3f}"
        retry(lambda: self.client.log_batch(self.run_id, tags=[RunTag(HEARTBEAT_TAG, now),
                                                               RunTag(PROGRESS_TAG, now)]))

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stop.set()
        if exc_type is not None and issubclass(exc_type, LeaseLost):
            return False  # the run is someone else's now
        if exc_type is None:
            status, message = "FINISHED", None
        else:
            stopped = issubclass(exc_type, KeyboardInterrupt) or procs.stop_requested.is_set()
            status = "KILLED" if stopped else "FAILED"
            message = f"{exc_type.__name__}: {exc}"
            if exc is not None:
                exc.mlflow_run_id = self.run_id  # lets a sweep tell a run's failure from a bug
        try:
            end_run(self.client.tracking_uri, self.run_id, status, message)
        except Exception as exc:  # the job's log says why the run stays RUNNING
            log.error("run %s could not be closed as %s: %s", self.run_id, status, exc)
            raise
        if procs.stop_requested.is_set():
            procs.stopped_run_closed.set()
        return False

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow accepts 100 params per batch
            retry(lambda i=i: self.client.log_batch(self.run_id, params=items[i:i + 100]))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        retry(lambda: self.client.log_batch(self.run_id, tags=items))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if step > self.logged.get(k, -1)]
        if items:
            retry(lambda: self.client.log_batch(self.run_id, metrics=items))

    def log_dataset(self, name: str, digest: str, source: str, context: str = "training",
                    profile: Mapping[str, Any] | None = None) -> None:
        """The run's data set as an MLflow dataset input (the UI's Datasets column): its name,
        the digest of its files, where it was read from and what the run used it for."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        ds = Dataset(name=name, digest=digest[:36], source_type="local",
                     source=json.dumps({"uri": source}),
                     profile=json.dumps(dict(profile)) if profile else None)
        inputs = [DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])]
        for attempt in range(DATASET_ATTEMPTS):
            try:
                retry(lambda: self.client.log_inputs(self.run_id, datasets=inputs))
                return
            except Exception as exc:
                # Two runs logging the same new data set at once race in MLflow's get-or-create
                # (a unique-key violation on a server's database): the next try links the one
                # that won. A description of the run never fails the run.
                if attempt == DATASET_ATTEMPTS - 1:
                    log.warning("run %s: its data set %s was not recorded as an MLflow dataset "
                                "input: %s", self.run_id, name, exc)
                time.sleep(0.2 * (attempt + 1))

    def log_text(self, text: str, artifact_file: str) -> None:
        retry(lambda: self.client.log_text(self.run_id, text, artifact_file))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))


CLOSE_ATTEMPTS = 12  # closing a run retries longer than other writes (up to about 40 s): a
# run left RUNNING by an owner that stopped waits for a later sweep to take it over


def end_run(uri: str, run_id: str, status: str, reason: str | None = None,
            only_running: bool = False, attempts: int = CLOSE_ATTEMPTS,
            owner: str | None = None) -> None:
    """Set a run's final status. FAILED or KILLED carry their reason (tag `error`, and the run's
    note); FINISHED clears an earlier interruption's note and error, kept in `resumed_after`.
    `only_running`: leave a run that has already ended (its owner closed it) as it is.
    `owner`: leave a run that another owner has taken over meanwhile as it is (a launcher
    ending the run of a job it killed)."""
    from mlflow.entities import RunTag

    client = get_client(uri)
    again = lambda fn: retry(fn, attempts)  # noqa: E731
    run = again(lambda: client.get_run(run_id))
    if only_running and run.info.status != "RUNNING":
        return
    if owner is not None and lease_holder(run)[1] not in (owner, None):
        return
    tags = run.data.tags
    if reason is not None:
        reason = reason[:MAX_ERROR_CHARS]
        again(lambda: client.log_batch(run_id, tags=[
            RunTag("error", reason), RunTag(NOTE_TAG, f"**{status}**: {reason}")]))
    elif "error" in tags:  # a resumed run that finished: its status note tells the truth
        history = "; ".join(x for x in (tags.get(RESUMED_AFTER_TAG), tags["error"]) if x)
        again(lambda: client.set_tag(run_id, RESUMED_AFTER_TAG, history[:MAX_ERROR_CHARS]))
        again(lambda: client.delete_tag(run_id, "error"))
        if tags.get(NOTE_TAG, "").startswith(("**KILLED**", "**FAILED**")):
            again(lambda: client.delete_tag(run_id, NOTE_TAG))
    again(lambda: client.set_terminated(run_id, status))


def create_owned_run(uri: str, experiment: str, name: str, tags: Mapping[str, Any],
                     parent_run_id: str | None, owner: str) -> str:
    """A new RUNNING run holding its first lease (owner); returns its id."""
    client = get_client(uri)
    exp_id = ensure_experiment(uri, experiment)
    tags = {k: str(v) for k, v in tags.items()}  # a server takes strings only
    tags.update({PARENT_TAG: parent_run_id} if parent_run_id else {})
    tags[OWNER_TAG] = owner
    tags[LEASE_TAG] = lease_value(1, owner)  # the first lease: the cell's ledger entry decided it
    run_id = retry(lambda: client.create_run(exp_id, run_name=name, tags=tags)).info.run_id
    return run_id


def delete_run(uri: str, run_id: str) -> None:
    """Soft-delete a run (a losing candidate for a cell): hidden from searches and the UI."""
    client = get_client(uri)
    retry(lambda: client.delete_run(run_id))


def experiment_runs(uri: str, experiment: str) -> list[Any]:
    """The training runs of an experiment (no sweep parents, no reports), oldest first."""
    client = get_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"],
                              max_results=10000)
    return [r for r in runs if r.data.tags.get("kind") not in ("sweep", "report", "claims")]


def set_note(uri: str, run_id: str, markdown: str) -> None:
    """The run's description, the note the MLflow UI shows on its page."""
    client = get_client(uri)
    retry(lambda: client.set_tag(run_id, NOTE_TAG, markdown[:60000]))
