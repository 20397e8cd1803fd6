"""Model registry: a registered run's model is reachable as models:/NAME@alias from predict.

Uses the session's shared tiny fit, registered in a private copy of its MLflow database (the
artifacts stay where they are and are only read), so the shared store is not modified.
"""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
from mlflow import MlflowClient
from test_train_support import shared_run

from progression import cli
from progression.errors import CheckpointError, ConfigError
from progression.predict import predict_cohort
from progression.registry import register_run_model
from progression.tracking import kept_tracking_uri
from progression.trained import resolve_checkpoint


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(shared run, tracking URI of a private copy of its store)."""
    run = shared_run(tmp_path_factory)
    copy = tmp_path_factory.mktemp("registry") / "mlruns.db"
    with sqlite3.connect(run.tracking_uri.removeprefix("sqlite:///")) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    return run, f"sqlite:///{copy}"


def test_champion_alias_forecasts_like_the_checkpoint_it_points_to(store, tmp_path):
    run, uri = store
    version = register_run_model(run.result.run_id, "progression-ra", alias="champion", tracking_uri=uri)
    assert version.uri == "models:/progression-ra@champion"

    by_alias = predict_cohort(version.uri, run.cohort, tracking_uri=uri, progress=False, cache_dir=tmp_path)
    by_path = predict_cohort(run.result.checkpoint_path, run.cohort, progress=False, cache_dir=tmp_path)

    pd.testing.assert_frame_equal(by_alias, by_path)
    assert by_alias["patient_id"].nunique() == 12


def test_registering_and_fetching_ignore_a_process_wide_tracking_uri_pointing_elsewhere(
        store, tmp_path, monkeypatch):
    run, uri = store
    import mlflow

    other = f"sqlite:///{tmp_path / 'other.db'}"
    trained = run.result.checkpoint_path.read_bytes()
    with kept_tracking_uri():
        monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
        mlflow.set_tracking_uri(other)
        version = register_run_model(run.result.run_id, "progression-elsewhere", tracking_uri=uri)
        for ref in (version.uri, f"runs:/{run.result.run_id}/model"):
            assert resolve_checkpoint(ref, tracking_uri=uri).read_bytes() == trained, ref


def test_alias_moves_to_the_newly_registered_version(store):
    run, uri = store
    first = register_run_model(run.result.run_id, "progression-move", alias="champion", tracking_uri=uri)
    second = register_run_model(run.result.run_id, "progression-move", alias="champion", tracking_uri=uri)
    client = MlflowClient(uri)
    assert (first.version, second.version) == ("1", "2")
    assert str(client.get_model_version_by_alias("progression-move", "champion").version) == "2"
    assert client.get_model_version("progression-move", "1").aliases == []
    assert client.get_model_version("progression-move", "2").run_id == run.result.run_id
    # A version number reaches the same checkpoint as the alias.
    by_version = resolve_checkpoint("models:/progression-move/1", tracking_uri=uri)
    assert by_version.read_bytes() == run.result.checkpoint_path.read_bytes()


def test_register_command_prints_the_uri_to_predict_with(store, capsys):
    run, uri = store
    code = cli.main(["register", "--run", run.result.run_id, "--name", "progression-cli",
                     "--alias", "challenger", "--tracking-uri", uri])
    assert code == 0
    assert "progression predict --checkpoint models:/progression-cli@challenger" in capsys.readouterr().out


def test_unknown_run_is_a_message_naming_it(store, capsys):
    _, uri = store
    assert cli.main(["register", "--run", "0123abcd", "--name", "x", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "run '0123abcd' not found" in err and "--tracking-uri" in err


def test_run_without_a_logged_model_cannot_be_registered(store):
    _, uri = store
    client = MlflowClient(uri)
    bare = client.create_run(client.create_experiment("bare")).info.run_id
    with pytest.raises(CheckpointError, match="has no logged MLflow model"):
        register_run_model(bare, "progression-bare", tracking_uri=uri)


@pytest.mark.parametrize("alias", ["v2", "2nd", "champion!"])
def test_alias_that_mlflow_would_reject_is_refused_up_front(store, alias):
    run, uri = store
    with pytest.raises(ConfigError, match=f"alias '{alias}'"):
        register_run_model(run.result.run_id, "progression-ra", alias=alias, tracking_uri=uri)
