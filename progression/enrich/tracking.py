"""Log an enrichment analysis to MLflow: params, metrics and the report files as artifacts.

Only called when a tracking URI was given (``--tracking-uri`` or
``$MLFLOW_TRACKING_URI``); without one nothing is logged and no ``mlruns`` appears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from progression.config import flatten
from progression.enrich.report import metrics
from progression.errors import TrackingError


def log_enrichment(summary: dict[str, Any], out_dir: Path, tracking_uri: str,
                   experiment: str, run_name: str = "enrich") -> str:
    """One MLflow run with ``enrich.*`` params, ``enrich/*`` metrics and ``out_dir`` files.

    Returns the run id. Raises TrackingError when the store cannot be used.
    """
    import mlflow

    params = {f"enrich.{k}": v for k, v in flatten(
        {"design": summary["design"], "inputs": summary["inputs"]}).items()}
    params["enrich.rule"] = summary["rule"]
    try:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=run_name) as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics(summary))
            mlflow.log_artifacts(str(out_dir), artifact_path="enrichment")
            return run.info.run_id
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(
            f"cannot log to MLflow at '{tracking_uri}': {exc}; check --tracking-uri or "
            "$MLFLOW_TRACKING_URI"
        ) from None
