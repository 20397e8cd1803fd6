"""The tracking store: where runs go, checking it, the offline fallback, copying runs.

Tracking URI: ``tracking.tracking_uri`` from the config, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<cwd>/mlruns.db``. MLflow >= 3.13 refuses the old ``./mlruns`` file store (and
Lightning's MLFlowLogger defaults to it and reads the environment at import), so the URI is
always resolved here and passed explicitly. With a SQLite store, artifacts go to
``mlartifacts/`` next to the database file (set as the experiment's artifact location).

The store is checked before any training starts (:func:`check_tracking`), so a typo in the
URI or a stopped server costs seconds, not a training run. With ``tracking.offline=true`` a
fit whose store is unreachable logs to a local SQLite store instead (:func:`usable_tracking_uri`)
and :func:`sync_runs` (``progression sync``) copies its runs to the server later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from progression.config import Config
from progression.errors import TrackingError

logger = logging.getLogger(__name__)

# Short timeouts for the reachability check; MLflow's defaults retry for minutes.
_CHECK_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def resolve_tracking_uri(configured: Config | str | None = None) -> str:
    """The tracking URI a run will use (config, then $MLFLOW_TRACKING_URI, then local SQLite).

    ``configured`` is a Config (its ``tracking.tracking_uri``) or a URI string.
    """
    if isinstance(configured, Config):
        configured = configured.tracking.tracking_uri
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        return f"sqlite:///{Path.cwd() / 'mlruns.db'}"
    if "://" not in uri and not uri.startswith("databricks"):
        raise TrackingError(
            f"tracking URI '{uri}' is a plain path: MLflow no longer accepts the file store; "
            f"use a database such as sqlite:///{Path(uri).resolve()}.db or a server URL "
            "(http://host:5000) in tracking.tracking_uri or MLFLOW_TRACKING_URI")
    return uri


def artifact_location(uri: str) -> str | None:
    """``file://`` URI of ``mlartifacts/`` beside a SQLite database; None for servers."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return None


@contextlib.contextmanager
def _quick_http() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in _CHECK_ENV}
    os.environ.update(_CHECK_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_tracking(uri: str) -> None:
    """Fail fast with :class:`TrackingError` when the store at ``uri`` cannot be used."""
    if uri.startswith("file:"):
        raise TrackingError(
            f"tracking URI '{uri}' is an MLflow file store, which MLflow 3.13+ refuses; use "
            "sqlite:///path/mlruns.db or a tracking server URL instead")
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(
                f"cannot create the directory of the MLflow database {db} ({exc.strerror}); "
                "set tracking.tracking_uri to sqlite:///<writable dir>/mlruns.db") from None
        if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise TrackingError(
                f"the MLflow database {db} is not writable; set tracking.tracking_uri to "
                "sqlite:///<writable dir>/mlruns.db")
    try:
        with _quick_http():
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types for an unusable store
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TrackingError(
            f"cannot reach the MLflow tracking store '{uri}' ({first}). Start the server "
            "(e.g. `mlflow server --backend-store-uri sqlite:///mlruns.db --port 5000`), fix "
            "tracking.tracking_uri / MLFLOW_TRACKING_URI, or leave both unset to use "
            "./mlruns.db") from None


def offline_uri(cfg: Config) -> str:
    """The local SQLite store a run falls back to with ``tracking.offline=true``."""
    return f"sqlite:///{(Path(cfg.train.output_dir) / 'offline' / 'mlruns.db').resolve()}"


def usable_tracking_uri(cfg: Config) -> str:
    """The store a fit logs to, checked before any training.

    The configured store when it can be used. When it cannot: a :class:`TrackingError`
    (naming the fix), or with ``tracking.offline=true`` the local :func:`offline_uri`, with a
    warning that says how to copy the run to the server later (``progression sync``).
    """
    uri = resolve_tracking_uri(cfg)
    try:
        check_tracking(uri)
        return uri
    except TrackingError as exc:
        if not cfg.tracking.offline:
            raise TrackingError(
                f"{exc} To train now and copy the run to the server later, set "
                "tracking.offline=true.") from None
        local = offline_uri(cfg)
        check_tracking(local)
        logger.warning(
            "%s\nContinuing offline (tracking.offline=true): this run is logged to %s. When "
            "the server is back, copy it there with:\n  progression sync --from %s --to %s",
            exc, local, local, uri)
        return local


# MLflow 3's UI opens an experiment on its GenAI pages (traces) unless it is tagged as model
# training; with this tag it opens on the runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def experiment_id(client, name: str, uri: str) -> str:
    """Id of experiment ``name``, created (with the local artifact location, tagged as a
    model-training experiment) when missing."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment '{name}' is deleted; restore it (`mlflow experiments "
                f"restore --experiment-id {existing.experiment_id}`) or set tracking.experiment")
        return existing.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri),
                                    tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})


def git_commit() -> str:
    """Commit of the progression source tree, or "" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


@contextlib.contextmanager
def kept_tracking_uri() -> Iterator[None]:
    """Put MLflow's process-wide tracking URI back as it was after a block.

    ``mlflow.set_tracking_uri`` (called by the fluent ``log_model`` path and by Lightning's
    ``MLFlowLogger``) sets a global and ``$MLFLOW_TRACKING_URI`` alike, so the variable says
    what the process had: unset, the default store; set, that store. Restoring it keeps one
    command's store from leaking into the next command run in the same process (a notebook,
    the tests, ``sync`` after ``evaluate``).
    """
    import mlflow.tracking.fluent as fluent

    previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
    previous_experiment = fluent._active_experiment_id
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_uri or None)
        fluent._active_experiment_id = previous_experiment


@contextlib.contextmanager
def fluent_store(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide fluent API at ``uri`` for a block, then put back what was
    (``mlflow.pyfunc.log_model`` only exists in the fluent form, which reads global state)."""
    with kept_tracking_uri():
        mlflow.set_tracking_uri(uri)
        yield


SYNCED_FROM_TAG = "progression.synced_from"  # on a copied run: the run id in the source store


def sync_runs(source: str, target: str, log_model: Callable[[str, str, Path], str]
              ) -> list[tuple[str, str]]:
    """Copy every run of the store ``source`` (e.g. an offline store) to ``target``.

    Each run is recreated in the experiment of the same name with its params, tags, full
    metric histories (steps and timestamps), artifacts and status; a run that had a pyfunc
    model gets it logged again from its checkpoint artifact by ``log_model(target, run_id,
    checkpoint)`` (:func:`progression.pyfunc_model.log_pyfunc_model`), so ``runs:/<id>/model`` and
    ``progression register`` work on the copy. Runs copied before (tag
    ``progression.synced_from``) are skipped: syncing twice copies nothing new. Returns
    ``(source run id, target run id)`` pairs of the runs copied now.
    """
    from mlflow.entities import Metric, Param

    check_tracking(source)
    check_tracking(target)
    src, dst = MlflowClient(source), MlflowClient(target)
    copied: list[tuple[str, str]] = []
    for experiment in src.search_experiments():
        runs = src.search_runs([experiment.experiment_id], max_results=50000)
        if not runs:
            continue
        dest_experiment = experiment_id(dst, experiment.name, target)
        done = {r.data.tags.get(SYNCED_FROM_TAG) for r in dst.search_runs(
            [dest_experiment], f"tags.`{SYNCED_FROM_TAG}` != ''", max_results=50000)}
        for run in runs:
            if run.info.run_id in done:
                continue
            tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.parentRunId"}
            tags[SYNCED_FROM_TAG] = run.info.run_id
            new_id = dst.create_run(dest_experiment, start_time=run.info.start_time, tags=tags,
                                    run_name=run.info.run_name).info.run_id
            params = [Param(k, v) for k, v in run.data.params.items()]
            for start in range(0, len(params), 100):
                dst.log_batch(new_id, params=params[start : start + 100])
            metrics = [Metric(m.key, m.value, m.timestamp, m.step) for key in run.data.metrics
                       for m in src.get_metric_history(run.info.run_id, key)]
            for start in range(0, len(metrics), 1000):
                dst.log_batch(new_id, metrics=metrics[start : start + 1000])
            model_uri = None
            if src.list_artifacts(run.info.run_id):
                with tempfile.TemporaryDirectory() as tmp:
                    local = Path(mlflow.artifacts.download_artifacts(
                        run_id=run.info.run_id, tracking_uri=source, dst_path=tmp))
                    dst.log_artifacts(new_id, str(local))
                    found = sorted(local.glob("checkpoints/*.ckpt"))
                    if found and run.data.params.get("tracking.log_model") == "True":
                        model_uri = log_model(target, new_id, found[0])
            dst.set_terminated(new_id, status=run.info.status, end_time=run.info.end_time)
            copied.append((run.info.run_id, new_id))
            logger.info("copied run %s -> %s%s", run.info.run_id, new_id,
                        " (with its model)" if model_uri else "")
    return copied
