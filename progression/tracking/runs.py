"""The one writer of MLflow runs: every command's run gets the same tags, params and datasets.

``train`` (and each tuning trial), the tuning study's parent run, ``evaluate`` and ``enrich``
create their runs with :func:`create_run` and log through the functions here, so that an
analyst sees in the MLflow UI, on every run:

- tags ``progression.kind`` (train, trial, study, evaluate, enrich), ``git_commit``,
  ``command`` (redacted, :mod:`progression.tracking.redact`), ``host``, and when a cohort is
  known ``cohort_fingerprint``, ``n_patients``, ``n_images``;
- on a run that scored a trained model (evaluate, enrich): ``progression.source_run``, the
  training run whose checkpoint it scored, and a description linking to that run's page in
  the UI (:func:`source_run_note`), and
  ``progression.model_version`` when the model came from the registry;
- params flattened (``train.lr``), redacted and cut to MLflow's length limit alike
  (:func:`log_params`);
- the cohorts as MLflow datasets (:func:`log_cohorts`): name = the cohort directory's name
  and split, digest = the cohort fingerprint, source = the directory's name (its path only
  with ``tracking.share_identifiers=true``), context training / validation / evaluation.

Only :class:`mlflow.MlflowClient` is used (no fluent, process-wide run state): two commands in
one process (a notebook, the tests) cannot write into each other's runs.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from progression.config import flatten
from progression.tracking.redact import redact, redact_command, redact_text
from progression.tracking.store import experiment_id, git_commit

KIND_TAG = "progression.kind"
SOURCE_RUN_TAG = "progression.source_run"  # the training run whose checkpoint was scored
MODEL_VERSION_TAG = "progression.model_version"  # name/version when it came from the registry
NOTE_TAG = "mlflow.note.content"  # the run's description in the UI (markdown)
PARAM_MAX_CHARS = 6000  # MLflow's limit on a param value
TAG_MAX_CHARS = 5000  # and on a tag value (resumed.<key>)
_BATCH = 100  # params per log_batch call (MLflow's limit)


@dataclass(frozen=True)
class CohortInput:
    """A cohort (or one split of it) used by a run, logged as an MLflow dataset.

    ``visits``: the visits table (only its columns and row count reach MLflow, never values);
    ``name``: the cohort directory's name plus the split (``cohort/train``); ``context``:
    ``training``, ``validation`` or ``evaluation``; ``source``: where the cohort lives (the
    directory's name unless identifiers are shared).
    """

    name: str
    fingerprint: str
    visits: Any
    context: str
    source: str


def cohort_input(cohort: Any, context: str, split: str | None = None,
                 share_identifiers: bool = False) -> CohortInput:
    """A :class:`CohortInput` for a :class:`~progression.cohort.Cohort` (the split's visits when
    ``split`` names a subset already taken by the caller)."""
    root = cohort.root
    location = str(root) if root is not None else "in-memory cohort"
    directory = root.name if root is not None else "cohort"
    return CohortInput(
        name=f"{directory}/{split}" if split else directory,
        fingerprint=cohort.fingerprint,
        visits=cohort.visits,
        context=context,
        source=redact(location, share_identifiers),
    )


def run_tags(kind: str, cohort: Any = None, n_images: int | None = None,
             source_run: str | None = None, model_version: str | None = None,
             share_identifiers: bool = False) -> dict[str, str]:
    """The tags every run starts with (see the module docstring)."""
    tags = {KIND_TAG: kind, "command": redact_command(sys.argv, share_identifiers),
            "host": socket.gethostname()}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    if cohort is not None:
        tags["cohort_fingerprint"] = cohort.fingerprint
        tags["n_patients"] = str(len(cohort.patients))
        tags["n_images"] = str(n_images if n_images is not None else len(cohort.images))
    if source_run:
        tags[SOURCE_RUN_TAG] = source_run
    if model_version:
        tags[MODEL_VERSION_TAG] = model_version
    return tags


def create_run(client: Any, experiment: str, *, name: str | None, tags: Mapping[str, str],
               parent_run_id: str | None = None) -> str:
    """A new run in ``experiment`` (created as a model-training experiment when missing) with
    ``tags`` (from :func:`run_tags`, plus the caller's own); returns its id."""
    all_tags = {k: str(v) for k, v in tags.items()}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    if SOURCE_RUN_TAG in all_tags:
        all_tags[NOTE_TAG] = source_run_note(client, all_tags[SOURCE_RUN_TAG])
    exp = experiment_id(client, experiment, client.tracking_uri)
    return client.create_run(exp, run_name=name or None, tags=all_tags).info.run_id


def source_run_note(client: Any, source_run: str) -> str:
    """The run description (markdown, shown on the run's page in the UI) that links to the
    training run whose model was scored; a plain mention when that run is in another store."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(source_run)
    except MlflowException:
        return f"Scores the model of training run `{source_run}` (not in this tracking store)."
    name = run.info.run_name or source_run
    link = f"#/experiments/{run.info.experiment_id}/runs/{source_run}"
    return f"Scores the model of training run [{name}]({link}) (`{source_run}`)."


def param_text(value: Any, share_identifiers: bool = False) -> str:
    """How a param value is stored: redacted, cut to MLflow's limit."""
    return redact(value, share_identifiers)[:PARAM_MAX_CHARS]


def log_params(client: Any, run_id: str, params: Mapping[str, Any],
               share_identifiers: bool = False) -> None:
    """Log ``params`` (flattened, redacted, cut to length); on a resumed run the values that
    changed become tags ``resumed.<key>`` instead (MLflow params are immutable)."""
    from mlflow.entities import Param, RunTag

    texts = {k: param_text(v, share_identifiers) for k, v in flatten(dict(params)).items()}
    logged = client.get_run(run_id).data.params
    new = [Param(k, v) for k, v in texts.items() if k not in logged]
    changed = [RunTag(f"resumed.{k}", v[:TAG_MAX_CHARS]) for k, v in texts.items()
               if k in logged and logged[k] != v]
    for start in range(0, len(new), _BATCH):
        client.log_batch(run_id, params=new[start : start + _BATCH])
    if changed:
        client.log_batch(run_id, tags=changed)


def log_metrics(client: Any, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log finite ``metrics`` at ``step``, in batches of 1000."""
    import math

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if v is not None and math.isfinite(float(v))]
    for start in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[start : start + 1000])


def log_cohorts(client: Any, run_id: str, inputs: Sequence[CohortInput]) -> None:
    """Log each cohort as an MLflow dataset with its context (the run's Dataset column).

    Only the visits table's column names and row count are stored (the dataset's schema and
    profile), never a value of it.
    """
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    entries = []
    for item in inputs:
        # MLflow warns about integer columns in the schema and that a local path "can be
        # interpreted in multiple ways" (it picks a local source, as wanted)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = from_pandas(item.visits, source=item.source,
                                  name=item.name, digest=item.fingerprint)
        entries.append(DatasetInput(dataset._to_mlflow_entity(),
                                    [InputTag(MLFLOW_DATASET_CONTEXT, item.context)]))
    if entries:
        client.log_inputs(run_id, datasets=entries)


TEXT_SUFFIXES = (".json", ".html", ".md", ".csv", ".txt", ".yaml", ".yml")


def log_report(client: Any, run_id: str, directory: Any, artifact_path: str,
               private: Sequence[str] = (), share_identifiers: bool = False) -> None:
    """Log a report directory as artifacts. Unless ``share_identifiers``: the entries named in
    ``private`` (per-patient tables, relative to ``directory``) stay on this machine, and text
    files are logged through :func:`~progression.tracking.redact.redact_text` (credentials and
    absolute paths out)."""
    import shutil
    import tempfile
    from pathlib import Path

    directory = Path(directory)
    if share_identifiers:
        client.log_artifacts(run_id, str(directory), artifact_path=artifact_path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / directory.name
        for path in sorted(directory.rglob("*")):
            relative = path.relative_to(directory)
            if not path.is_file() or any(relative.is_relative_to(p) for p in private):
                continue
            target = copy / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix.lower() in TEXT_SUFFIXES:
                target.write_text(redact_text(path.read_text(errors="replace")))
            else:
                shutil.copyfile(path, target)
        if copy.is_dir():
            client.log_artifacts(run_id, str(copy), artifact_path=artifact_path)


def training_run_name(cfg: Any) -> str:
    """A training run's name: config, backbone, image size, seed (``train tiny small_cnn 64px
    seed0``); ``tracking.run_name`` when the user set one."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    backbone = cfg.model.backbone if cfg.model.use_images else "no-images"
    parts = ["train", cfg.tracking.config_name or "custom", backbone]
    if cfg.model.use_images:
        parts.append(f"{cfg.data.image_size}px")
    parts.append(f"seed{cfg.train.seed}")
    return " ".join(parts)


@contextlib.contextmanager
def system_metrics(uri: str, run_id: str | None, enabled: bool = True) -> Iterator[None]:
    """Sample CPU, memory (and GPU) use into run ``run_id`` for a block (MLflow's system
    metrics, every 10 s); nothing when disabled (``tracking.system_metrics=false``), without a
    run, or without ``psutil``, which MLflow needs for it."""
    import importlib.util

    if not enabled or run_id is None or importlib.util.find_spec("psutil") is None:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, tracking_uri=uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
