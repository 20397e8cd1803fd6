"""An evaluation as an MLflow run: its metrics with CI bounds, the evaluated cohort as a
dataset, the tags linking it to the scored checkpoint's training run, and the report, all
through the one run writer (:mod:`progression.tracking.runs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from progression.cohort import Cohort
from progression.errors import TrackingError
from progression.evaluate.forecasts import checkpoint_data, is_checkpoint


def mlflow_name(row: Any, model_name: str | None) -> str:
    prefix = "test/" if row.method == model_name else f"test/{row.method}/"
    return prefix + row.mlflow_name


def log_to_mlflow(table: pd.DataFrame, out_dir: Path, model_name: str | None, tracking_uri: str,
                  experiment: str, run_name: str, params: dict[str, Any],
                  source: Any, cohort: Cohort, share_identifiers: bool = False) -> str:
    """Log every finite metric (and its CI bounds), the evaluated cohort (an MLflow dataset,
    context ``evaluation``), the tags (:func:`_run_tags`: the scored checkpoint's training run)
    and the report directory with the one run writer
    (:mod:`progression.tracking.runs`); returns the run id. The per-patient tables
    (``predictions/``, ``outcomes.csv``) stay in the local report unless
    ``share_identifiers``."""
    import mlflow
    from mlflow import MlflowClient

    from progression import tracking

    metrics: dict[str, float] = {}
    for row in table.itertuples(index=False):
        name = mlflow_name(row, model_name)
        for key, suffix in (("value", ""), ("ci_lo", "_ci_lo"), ("ci_hi", "_ci_hi")):
            value = getattr(row, key)
            if value is not None and np.isfinite(value):
                metrics[name + suffix] = float(value)
    try:
        client = MlflowClient(tracking_uri)
        tags = _run_tags(source, cohort, tracking_uri, share_identifiers)
        run_id = tracking.create_run(client, experiment, name=run_name, tags=tags)
        tracking.log_params(client, run_id, params, share_identifiers)
        tracking.log_metrics(client, run_id, metrics)
        tracking.log_cohorts(client, run_id, [
            tracking.cohort_input(cohort, "evaluation", share_identifiers=share_identifiers)])
        tracking.log_report(client, run_id, out_dir, "evaluation", PER_PATIENT_FILES,
                            share_identifiers)
        client.set_terminated(run_id)
        return run_id
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(
            f"could not log the evaluation to MLflow at '{tracking_uri}': {exc}; check the "
            "tracking URI (e.g. sqlite:///mlruns.db) or leave --tracking-uri out"
        ) from None


PER_PATIENT_FILES = ("predictions", "outcomes.csv")  # report entries naming patients


def _run_tags(source: Any, tables: Cohort, tracking_uri: str | None,
              share_identifiers: bool) -> dict[str, str]:
    """The evaluate run's tags: the common ones, and the training run (and registered model
    version) of a checkpoint it scored."""
    from progression import tracking

    source_run = model_version = None
    if is_checkpoint(source):
        source_run = checkpoint_data(source, tracking_uri).meta.run_id
        text = str(source)
        if text.startswith("models:/"):
            model_version = text[len("models:/"):]
    return tracking.run_tags("evaluate", tables, source_run=source_run,
                             model_version=model_version, share_identifiers=share_identifiers)
