"""Artifacts of a run: listing, downloading, JSON in and out, and the report's own run."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from emergence_lab.store.connection import get_client, retry
from emergence_lab.store.ledger import latest_entry, set_once

T = TypeVar("T")


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


def log_json(uri: str, run_id: str, obj: Any, artifact_file: str) -> None:
    """Write a JSON artifact to a run."""
    client = get_client(uri)
    retry(lambda: client.log_text(run_id, json.dumps(obj, indent=1), artifact_file))


def log_text(uri: str, run_id: str, text: str, artifact_file: str) -> None:
    """Write a text artifact to a run."""
    client = get_client(uri)
    retry(lambda: client.log_text(run_id, text, artifact_file))


def load_json(uri: str, run_id: str, artifact_file: str) -> Any | None:
    """A JSON artifact of a run, None when it has none."""
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifact(uri, run_id, artifact_file, tmp)
        return json.loads(path.read_text()) if path else None


def load_text(uri: str, run_id: str, artifact_file: str) -> str | None:
    """A text artifact of a run, None when it has none."""
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifact(uri, run_id, artifact_file, tmp)
        return path.read_text() if path else None


REPORT_HISTORY = ("report.md", "claims.csv", "summary.csv")  # kept of every earlier version


def log_report(uri: str, experiment_id: str, name: str, source_run_ids: list[str],
               files: list[Path], tags: Mapping[str, str], of: str | None = None) -> str:
    """Record a report as a run (tag kind=report) with its files (those the report wrote, never
    anything else in its folder) as artifacts under report/;
    returns its id. `of` (a sweep's parent run id) makes it that sweep's one report run: a later
    report of the sweep is logged into it again (report/ holds the latest; history/v<n>/ the
    text of each version, tag report_version = n), never as a second run."""
    from mlflow.entities import RunTag

    client = get_client(uri)
    rid = _report_run(uri, experiment_id, name, {"kind": "report", **tags}, of)
    version = int(client.get_run(rid).data.tags.get("report_version", 0)) + 1
    log_json(uri, rid, source_run_ids, "source_runs.json")
    retry(lambda: client.log_batch(rid, tags=[
        RunTag("source_run_ids", ",".join(source_run_ids)[:5000]),
        RunTag("report_version", str(version)), RunTag("report_updated_at", f"{time.time():.0f}")]))
    for path in files:
        retry(lambda path=path: client.log_artifact(rid, str(path), "report"))
    for path in files:
        if path.name in REPORT_HISTORY:
            retry(lambda path=path: client.log_artifact(rid, str(path), f"history/v{version}"))
    retry(lambda: client.set_terminated(rid, "FINISHED"))
    return rid


def _report_run(uri: str, experiment_id: str, name: str, tags: Mapping[str, str],
                of: str | None) -> str:
    """The sweep's report run (made by whoever reports it first: a ledger entry), or a new one."""
    client = get_client(uri)
    if of is None:
        return retry(lambda: client.create_run(experiment_id, run_name=name, tags=tags)).info.run_id
    attempt, held = latest_entry(uri, experiment_id, f"report.{of}")
    if held is not None and client.get_run(held).info.lifecycle_stage != "deleted":
        return held
    key = f"report.{of}.{attempt + 1}"  # the first, or after someone deleted the last one
    mine = retry(lambda: client.create_run(experiment_id, run_name=name,
                                           tags={**tags, "report_of_sweep": of})).info.run_id
    winner = set_once(uri, experiment_id, key, mine)
    if winner != mine:
        retry(lambda: client.delete_run(mine))
    return winner
