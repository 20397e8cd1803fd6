"""Log an enrichment analysis to MLflow: params, metrics and the report files as artifacts.

Only called when a tracking URI was given (``--tracking-uri`` or
``$MLFLOW_TRACKING_URI``); without one nothing is logged and no ``mlruns`` appears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from progression.enrich.report import metrics
from progression.errors import TrackingError


def log_enrichment(summary: dict[str, Any], out_dir: Path, tracking_uri: str,
                   experiment: str, run_name: str = "enrich",
                   source_run: str | None = None, share_identifiers: bool = False) -> str:
    """One MLflow run with ``enrich.*`` params, ``enrich/*`` metrics and ``out_dir`` files,
    written by the one run writer (:mod:`progression.tracking.runs`: the common tags, and
    ``progression.source_run`` = ``source_run``, the training run whose model made the
    predictions, when given). ``selected.csv`` (patient ids) stays in ``out_dir`` unless
    ``share_identifiers``.

    With a SQLite store the artifacts go to ``mlartifacts/`` beside the database
    (:func:`progression.tracking.experiment_id`), never into the working directory.
    Returns the run id. Raises TrackingError when the store cannot be used; call
    :func:`progression.tracking.check_tracking` first to fail before any work.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from progression import tracking

    params = {"enrich": {"design": summary["design"], "inputs": summary["inputs"]},
              "enrich.rule": summary["rule"]}
    try:
        client = MlflowClient(tracking_uri)
        run_id = tracking.create_run(client, experiment, name=run_name,
                                     tags=tracking.run_tags("enrich", source_run=source_run,
                                                            share_identifiers=share_identifiers))
        tracking.log_params(client, run_id, params, share_identifiers)
        tracking.log_metrics(client, run_id, metrics(summary))
        tracking.log_report(client, run_id, out_dir, "enrichment", ("selected.csv",),
                            share_identifiers)
        client.set_terminated(run_id)
        return run_id
    except MlflowException as exc:
        raise TrackingError(
            f"cannot log to MLflow at '{tracking_uri}': {exc}; check --tracking-uri or "
            "$MLFLOW_TRACKING_URI"
        ) from None
