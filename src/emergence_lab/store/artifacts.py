"""Artifacts of a run: listing, downloading, JSON in and out, and the report's own run."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from emergence_lab.store.connection import get_client, retry

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


def log_report(uri: str, experiment_id: str, name: str, source_run_ids: list[str],
               out_dir: Path, tags: Mapping[str, str]) -> str:
    """Record a report as a run (tag kind=report) with its files as artifacts; returns its id."""
    client = get_client(uri)
    run = retry(lambda: client.create_run(experiment_id, run_name=name,
                                           tags={"kind": "report", **tags}))
    rid = run.info.run_id
    log_json(uri, rid, source_run_ids, "source_runs.json")
    retry(lambda: client.set_tag(rid, "source_run_ids", ",".join(source_run_ids)[:5000]))
    retry(lambda: client.log_artifacts(rid, str(out_dir), "report"))
    retry(lambda: client.set_terminated(rid, "FINISHED"))
    return rid
