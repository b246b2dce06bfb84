"""Links into the MLflow UI: its address for a store, and the pages of a run and of a sweep."""

from __future__ import annotations

import json
from typing import TypeVar
from urllib.parse import quote

T = TypeVar("T")


DEFAULT_UI = "http://127.0.0.1:5000"  # where `make ui` serves an embedded store


def ui_address(uri: str, ui: str | None = None) -> str:
    """The MLflow UI's address for a store: `ui` when given, the server itself for an http(s)
    tracking URI, else where `make ui` serves."""
    if ui:
        return ui.rstrip("/")
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else DEFAULT_UI


# MLflow 3's UI opens in its generative-AI layout (evaluations, an assistant) unless the URL (or
# the browser's memory of a earlier choice) asks for the machine-learning one: runs, models.
CLASSIC = "workflowType=machine_learning"


def run_page(ui: str, experiment_id: str, run_id: str, path: str = "") -> str:
    """A run's page in the MLflow UI (path: e.g. artifactPath/report/report.html)."""
    return (f"{ui}/#/experiments/{experiment_id}/runs/{run_id}" + (f"/{path}" if path else "")
            + f"?{CLASSIC}")


def sweep_page(ui: str, experiment_id: str, parent_run_id: str) -> str:
    """The runs table of an experiment filtered to one sweep's runs (its parent's children)."""
    query = quote(f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    # isPreview: the UI applies a filter from the URL only with it (as its own links do)
    return f"{ui}/#/experiments/{experiment_id}/runs?searchFilter={query}&isPreview=true&{CLASSIC}"


def metric_page(ui: str, experiment_id: str, run_ids: list[str], keys: list[str]) -> str:
    """MLflow's metric page: `keys` over the epochs (steps) of every run in `run_ids`, one curve
    a run (the route and parameters the UI's own links use)."""
    enc = lambda obj: quote(json.dumps(obj, separators=(",", ":")))  # noqa: E731
    return (f"{ui}/#/metric?runs={enc(run_ids)}&metric={enc(keys[0])}"
            f"&experiments={enc([experiment_id])}&plot_metric_keys={enc(keys)}&plot_layout=%7B%7D"
            f"&x_axis=step&y_axis_scale=linear&line_smoothness=1&show_point=false"
            f"&deselected_curves=%5B%5D&last_linear_y_axis_range=%5B%5D&{CLASSIC}")
