"""Log an enrichment analysis to MLflow: params, metrics and the report files as artifacts.

Only called when a tracking URI was given (``--tracking-uri`` or
``$MLFLOW_TRACKING_URI``); without one nothing is logged and no ``mlruns`` appears.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from progression.config import flatten
from progression.enrich.report import metrics
from progression.errors import TrackingError


def log_enrichment(summary: dict[str, Any], out_dir: Path, tracking_uri: str,
                   experiment: str, run_name: str = "enrich") -> str:
    """One MLflow run with ``enrich.*`` params, ``enrich/*`` metrics and ``out_dir`` files.

    With a SQLite store the artifacts go to ``mlartifacts/`` beside the database
    (:func:`progression.tracking.experiment_id`), never into the working directory.
    Returns the run id. Raises TrackingError when the store cannot be used; call
    :func:`progression.tracking.check_tracking` first to fail before any work.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    from progression.tracking import experiment_id, log_params

    params = {f"enrich.{k}": v for k, v in flatten(
        {"design": summary["design"], "inputs": summary["inputs"]}).items()}
    params["enrich.rule"] = summary["rule"]
    try:
        client = MlflowClient(tracking_uri)
        run = client.create_run(experiment_id(client, experiment, tracking_uri),
                                run_name=run_name)
        run_id = run.info.run_id
        log_params(client, run_id, params)
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, now, 0)
                                          for key, value in metrics(summary).items()])
        client.log_artifacts(run_id, str(out_dir), artifact_path="enrichment")
        client.set_terminated(run_id)
        return run_id
    except MlflowException as exc:
        raise TrackingError(
            f"cannot log to MLflow at '{tracking_uri}': {exc}; check --tracking-uri or "
            "$MLFLOW_TRACKING_URI"
        ) from None
