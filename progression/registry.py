"""The MLflow model registry: give a trained run's model a name and an alias.

``progression register --run RUN_ID --name progression-ra --alias champion`` registers the
MLflow model that ``progression train`` logged for that run as a new version of the
registered model ``progression-ra`` and points the alias ``champion`` at it, so that
``progression predict --checkpoint models:/progression-ra@champion`` always uses the model
the team promoted, without anyone copying checkpoint paths around.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from progression.errors import CheckpointError, ConfigError, TrackingError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version; ``uri`` is what ``predict`` accepts."""

    name: str
    version: str
    alias: str | None
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def _logged_model(client, run):
    """The model logged by the run (MLflow 3 logged models; the newest if several)."""
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    if not models:
        raise CheckpointError(
            f"run {run.info.run_id} has no logged MLflow model; train it with "
            "tracking.log_model=true (the default), then register it"
        )
    return max(models, key=lambda m: m.creation_timestamp)


def register_run_model(
    run_id: str, name: str, alias: str | None = None, tracking_uri: str | None = None
) -> RegisteredVersion:
    """Register the model logged by ``run_id`` as a new version of ``name``; set ``alias``.

    An alias moves: setting ``champion`` on the new version takes it off the previous one.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not NAME.match(name):
        raise ConfigError(f"model name '{name}': use letters, digits, '.', '_' and '-' only")
    if alias is not None and (not ALIAS.match(alias) or re.fullmatch(r"[vV]\d+", alias)):
        raise ConfigError(
            f"alias '{alias}': use letters, digits, '_' and '-', starting with a letter "
            "(v1, v2, ... are reserved for versions)"
        )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise TrackingError(
            f"run '{run_id}' not found in the tracking store {client.tracking_uri}: {exc.message}; "
            "check --run and the tracking URI (--tracking-uri or $MLFLOW_TRACKING_URI)"
        ) from None
    model = _logged_model(client, run)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    # The artifact location, not "models:/<id>": MLflow resolves a models:/ source in the
    # process-wide tracking store, which need not be the one this client talks to.
    version = client.create_model_version(
        name,
        source=model.artifact_location,
        run_id=run_id,
        tags={"progression.run_id": run_id},
        model_id=model.model_id,
    )
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return RegisteredVersion(name=name, version=str(version.version), alias=alias, run_id=run_id)


def model_artifact_uri(ref: str, tracking_uri: str) -> str:
    """Where the files of ``models:/NAME@ALIAS[/path]``, ``models:/NAME/VERSION[/path]`` or
    ``models:/<model_id>[/path]`` are, looked up in the store at ``tracking_uri``.

    MLflow's own download resolves ``models:/`` URIs in the process-wide registry (whatever
    ``mlflow.set_registry_uri`` or $MLFLOW_TRACKING_URI say), not in the store it is given;
    resolving here keeps ``predict --tracking-uri`` on the store the user named.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    head, _, rest = ref.removeprefix("models:/").partition("/")
    if "@" in head:
        name, alias = head.split("@", 1)
        location = client.get_model_version_download_uri(
            name, client.get_model_version_by_alias(name, alias).version
        )
    elif head.startswith("m-"):  # a logged model id
        location = client.get_logged_model(head).artifact_location
    else:
        version, _, rest = rest.partition("/")
        location = client.get_model_version_download_uri(head, version)
    location = location.rstrip("/")
    return f"{location}/{rest}" if rest else location


def run_artifact_uri(ref: str, tracking_uri: str) -> str:
    """Where the files of ``runs:/<run_id>/<path>`` are, looked up in the store at
    ``tracking_uri``: the run's logged model named by the first part of ``path`` (MLflow 3
    keeps logged models apart from the run's artifacts), else the run's artifact ``path``.

    As for ``models:/`` (:func:`model_artifact_uri`), MLflow's own download finds the logged
    model through the process-wide tracking URI, not the store it is given.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run_id, _, path = ref.removeprefix("runs:/").partition("/")
    run = client.get_run(run_id)
    name, _, rest = path.partition("/")
    for model in client.search_logged_models([run.info.experiment_id],
                                             f"source_run_id = '{run_id}'"):
        if model.name == name:
            location = model.artifact_location.rstrip("/")
            return f"{location}/{rest}" if rest else location
    return f"{run.info.artifact_uri.rstrip('/')}/{path}"
