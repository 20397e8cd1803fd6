"""The MLflow pyfunc model of a trained checkpoint: ``runs:/<run_id>/model``.

Logged by ``progression train`` (and again by ``progression sync`` on the copied run); MLflow
users load it with ``mlflow.pyfunc.load_model`` and get the predictions table of
:func:`progression.predict.predict_cohort` from a cohort directory or one row per film.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
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


# Input columns besides the checkpoint's covariates: a cohort directory, or one row per film.
_INPUT_COLUMNS = ("cohort_dir", "patient_id", "visit_date", "region", "path", "birth_date",
                  "svdh_total", "svdh_erosion", "svdh_jsn")
_OUTPUT_TYPES = {"patient_id": "string", "index_date": "datetime", "note": "string"}
# One patient with two scored visits and no film (covariates missing): what every model can
# forecast from, so MLflow's check of the example when logging runs a real prediction.
INPUT_EXAMPLE = pd.DataFrame({"patient_id": ["example", "example"],
                              "visit_date": ["2020-01-15", "2021-01-15"],
                              "svdh_total": [10.0, 12.0]})


def model_signature(checkpoint: Path) -> Any:
    """The logged model's signature: every input column optional (a ``cohort_dir`` column, or
    one row per film with ``patient_id``, ``visit_date``, ``region``, ``path`` and the
    checkpoint's covariates: columns outside the signature would be dropped by MLflow), the
    predictions table as output, and the ``horizons`` param (years, comma-separated)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    from progression.columns import PREDICTION_COLUMNS
    from progression.models.checkpoint import checkpoint_meta, read_checkpoint

    spec = checkpoint_meta(read_checkpoint(checkpoint)).covariate_spec()
    covariates = [c.name for c in spec.static_numeric + spec.static_categorical
                  + spec.visit_numeric + spec.visit_categorical]
    names = list(dict.fromkeys([*_INPUT_COLUMNS, *covariates]))
    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), name, required=False) for name in names]),
        outputs=Schema([ColSpec(_OUTPUT_TYPES.get(name, "double"), name)
                        for name in PREDICTION_COLUMNS]),
        params=ParamSchema([ParamSpec("horizons", "string", "1,2")]),
    )


class _KnownPyfuncNotices(logging.Filter):
    """Drops a notice ``mlflow.pyfunc`` prints for every model this project logs, about a
    deliberate choice: the model is the small :class:`ProgressionPyfuncModel` object (its
    code ships with the model, see :func:`log_pyfunc_model`)."""

    NOTICES = ("Passing a Python object as `python_model`",)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOTICES)


def model_requirements() -> list[str]:
    """The pip requirements of a logged model: this package's own dependencies, pinned.

    Each dependency of the installed distribution (``ra-progression``; extras left out) at the
    version installed now, without a local label (``2.4.1+cpu`` -> ``2.4.1``) so that pip can
    find it on PyPI. ``progression`` itself is not listed: its code ships inside the model
    (``code_paths``), because the distribution is not on PyPI and the unrelated PyPI package
    named ``progression`` is a progress bar.
    """
    from importlib.metadata import packages_distributions, requires, version

    from packaging.requirements import Requirement
    from packaging.version import Version

    distribution = packages_distributions()["progression"][0]
    pinned = []
    for text in requires(distribution) or []:
        req = Requirement(text)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        pinned.append(f"{req.name}=={Version(version(req.name)).public}")
    return pinned


@contextlib.contextmanager
def _package_source() -> Iterator[Path]:
    """A clean copy of the ``progression`` package (no ``__pycache__``) for ``code_paths``."""
    source = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "progression"
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        yield copy


def log_pyfunc_model(uri: str, run_id: str, checkpoint: Path) -> str:
    """Log the checkpoint as an MLflow pyfunc model ``runs:/<run_id>/model``; returns its URI.

    The model carries this package's code (``code_paths``) and pins its dependencies
    (:func:`model_requirements`), so ``mlflow.pyfunc.load_model`` and ``mlflow models serve``
    work in an environment built from the model's own ``requirements.txt``; it has a
    signature (:func:`model_signature`) and an input example (:data:`INPUT_EXAMPLE`).
    """
    import mlflow.tracking.fluent as fluent

    notices, pyfunc_log = _KnownPyfuncNotices(), logging.getLogger("mlflow.pyfunc")
    pyfunc_log.addFilter(notices)
    try:
        with fluent_store(uri), _package_source() as code:
            # start_run(run_id) refuses a run outside the active experiment: make it the run's.
            fluent._active_experiment_id = MlflowClient(uri).get_run(run_id).info.experiment_id
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(
                    name=MODEL_ARTIFACT,
                    python_model=ProgressionPyfuncModel(),
                    artifacts={CHECKPOINT_KEY: str(checkpoint)},
                    code_paths=[str(code)],
                    pip_requirements=model_requirements(),
                    signature=model_signature(checkpoint),
                    input_example=INPUT_EXAMPLE,
                )
    finally:
        pyfunc_log.removeFilter(notices)
    return info.model_uri
