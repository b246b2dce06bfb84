"""A run's final network as an MLflow logged model (MLflow 3's LoggedModel, listed under the
run's "Logged models"), saved by MLflow's own PyTorch flavor so that
`mlflow.pytorch.load_model("models:/<model id>")` loads it back (tracking.log_model)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from emergence_lab.store.connection import get_client, retry


def log_pytorch_model(uri: str, run_id: str, model: Any, input_example: Any = None,
                      name: str = "model", step: int = 0,
                      tags: dict[str, str] | None = None) -> str:
    """Save `model` with mlflow.pytorch (pickled: the whole module, pruning masks included;
    its signature from `input_example`), store it as a logged model of the run's experiment
    linked to the run at `step`; its model id."""
    import mlflow.pytorch
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    client = get_client(uri)
    run = retry(lambda: client.get_run(run_id))
    lm = retry(lambda: client.create_logged_model(run.info.experiment_id, name=name,
                                                  source_run_id=run_id, tags=tags,
                                                  model_type="pytorch"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            mlflow.pytorch.save_model(model, str(path), serialization_format="pickle",
                                      input_example=input_example)
            retry(lambda: client.log_model_artifacts(lm.model_id, str(path)))
        retry(lambda: client.finalize_logged_model(lm.model_id, LoggedModelStatus.READY))
        retry(lambda: client.log_outputs(run_id, [LoggedModelOutput(lm.model_id, step)]))
    except BaseException:
        client.finalize_logged_model(lm.model_id, LoggedModelStatus.FAILED)
        raise
    return lm.model_id
