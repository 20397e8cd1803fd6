"""The MLflow pyfunc model of a trained checkpoint: ``runs:/<run_id>/model``.

Logged by ``progression train`` (and again by ``progression sync`` on the copied run); MLflow
users load it with ``mlflow.pyfunc.load_model`` and get the predictions table of
:func:`progression.predict.predict_cohort` from a cohort directory or one row per film.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient

from progression.tracking import fluent_store

MODEL_ARTIFACT = "model"  # runs:/<run_id>/model is the pyfunc model
CHECKPOINT_KEY = "checkpoint"  # name of the checkpoint inside the pyfunc model's artifacts


class ProgressionPyfuncModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper around a progression checkpoint.

    Input: a DataFrame with a ``cohort_dir`` column (each distinct directory is forecast),
    or one row per image with format-v1 columns (``patient_id``, ``visit_date``, ``region``,
    ``path`` + covariates; a row without ``path`` is a visit without a film). Output: the
    predictions table (docs/architecture.md). ``params={"horizons": "1,2"}`` sets the
    horizons (years).
    """

    def load_context(self, context) -> None:
        self.checkpoint = context.artifacts[CHECKPOINT_KEY]

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        from progression.predict import predict_cohort, predict_frame  # torch: on first use

        horizons = _parse_horizons((params or {}).get("horizons", "1,2"))
        frame = pd.DataFrame(model_input)
        if "cohort_dir" in frame.columns:
            parts = [predict_cohort(self.checkpoint, d, horizons=horizons, progress=False)
                     for d in dict.fromkeys(frame["cohort_dir"].astype(str))]
            return pd.concat(parts, ignore_index=True)
        return predict_frame(self.checkpoint, frame, horizons=horizons)


def _parse_horizons(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        return tuple(float(v) for v in value.split(",") if v.strip())
    if isinstance(value, int | float):
        return (float(value),)
    return tuple(float(v) for v in value)


def _parse_horizons(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        return tuple(float(v) for v in value.split(",") if v.strip())
    if isinstance(value, int | float):
        return (float(value),)
    return tuple(float(v) for v in value)


class _KnownPyfuncNotices(logging.Filter):
    """Drops two notices ``mlflow.pyfunc`` prints for every model this project logs, both about
    deliberate choices: the model is the small :class:`ProgressionPyfuncModel` object (its
    code is the installed package, pinned in ``pip_requirements``), and it has no signature
    because its input columns are the cohort's own covariates."""

    NOTICES = ("Passing a Python object as `python_model`", "Failed to infer model signature")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOTICES)


def log_pyfunc_model(uri: str, run_id: str, checkpoint: Path) -> str:
    """Log the checkpoint as an MLflow pyfunc model ``runs:/<run_id>/model``; returns its URI."""
    from importlib.metadata import version

    import mlflow.tracking.fluent as fluent

    notices, pyfunc_log = _KnownPyfuncNotices(), logging.getLogger("mlflow.pyfunc")
    pyfunc_log.addFilter(notices)
    try:
        with fluent_store(uri):
            # start_run(run_id) refuses a run outside the active experiment: make it the run's.
            fluent._active_experiment_id = MlflowClient(uri).get_run(run_id).info.experiment_id
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(
                    name=MODEL_ARTIFACT,
                    python_model=ProgressionPyfuncModel(),
                    artifacts={CHECKPOINT_KEY: str(checkpoint)},
                    pip_requirements=[f"progression=={version('progression')}"],
                )
    finally:
        pyfunc_log.removeFilter(notices)
    return info.model_uri
