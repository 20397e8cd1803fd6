"""MLflow tracking server down: `train` fails fast, before any image is decoded or any
epoch runs, with a message that says what to do; never minutes of HTTP retries. With
``tracking.offline=true`` it trains anyway into a local store, and `progression sync` copies
the run to the server once it is back.

(A closed port and a plain-directory URI through ``fit`` are covered by test_train.py.)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from test_train_support import shared_run

from progression import cli
from progression.commands import sync

FAST = ["data.image_size=32", "train.max_epochs=2", "train.image_epochs=1", "train.threads=1",
        "train.progress=false", "tracking.log_model=false"]
EXPERIMENT = "reliability-offline"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.mark.timeout(120)  # MLflow's default HTTP retries alone would take minutes
@pytest.mark.parametrize("where", ["unknown host", "silent server"])
def test_unreachable_tracking_server_fails_fast_before_training_with_the_fix(
    handmade_cohort, tmp_path, capfd, silent_server, where
):
    uri = {
        "unknown host": "http://tracking.invalid:5000",  # .invalid never resolves (RFC 2606)
        "silent server": f"http://127.0.0.1:{silent_server}",
    }[where]
    code = cli.main(["train", "--data", str(handmade_cohort), "--config", "tiny", *FAST,
                     f"data.cache_dir={tmp_path / 'cache'}", f"train.output_dir={tmp_path / 'runs'}",
                     f"tracking.tracking_uri={uri}"])
    captured = capfd.readouterr()
    output = captured.out + captured.err
    assert code == 2, output
    assert "Traceback" not in output
    assert f"cannot reach the MLflow tracking store '{uri}'" in output
    assert "mlflow server" in output and "tracking.tracking_uri" in output  # how to fix it
    assert "tracking.offline=true" in output  # or how to train anyway
    assert not (tmp_path / "cache").exists()  # no image decoded
    assert not (tmp_path / "runs").exists()  # no run directory, no checkpoint


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """A tiny training run with the server down and tracking.offline=true."""
    shared = shared_run(tmp_path_factory)
    root = tmp_path_factory.mktemp("offline")
    server = f"http://127.0.0.1:{free_port()}"
    overrides = [o for o in shared.overrides
                 if not o.startswith(("train.output_dir=", "tracking.", "train.max_epochs=",
                                      "train.image_epochs="))]
    overrides += [f"train.output_dir={root / 'runs'}", f"tracking.tracking_uri={server}",
                  f"tracking.experiment={EXPERIMENT}", "tracking.offline=true",
                  "train.max_epochs=2", "train.image_epochs=1"]
    keep, out = _Keep(), io.StringIO()
    logging.getLogger().addHandler(keep)
    try:
        with contextlib.redirect_stdout(out):
            code = cli.main(["train", "--config", "tiny", *overrides])
    finally:
        logging.getLogger().removeHandler(keep)
    store = f"sqlite:///{(root / 'runs' / 'offline' / 'mlruns.db').resolve()}"
    return {"code": code, "log": "\n".join(keep.messages), "stdout": out.getvalue(),
            "server": server, "store": store, "shared": shared}


def test_with_offline_true_training_runs_into_a_local_store_and_says_how_to_sync(offline):
    assert offline["code"] == 0, offline["log"]
    log = offline["log"]
    assert f"cannot reach the MLflow tracking store '{offline['server']}'" in log
    assert f"this run is logged to {offline['store']}" in log
    assert f"progression sync --from {offline['store']} --to {offline['server']}" in log
    client = MlflowClient(offline["store"])
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.info.status == "FINISHED"
    assert f"run id      {run.info.run_id}" in offline["stdout"]
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2  # both epochs
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    ckpt = Path(offline["stdout"].split("checkpoint  ")[1].split()[0])
    meta = torch.load(ckpt, map_location="cpu", weights_only=False)["progression"]["mlflow"]
    # the store's file name only: no absolute path of this machine in a checkpoint
    assert meta["tracking_uri"] == "sqlite:///mlruns.db"


def test_sync_copies_the_offline_run_to_the_server_once(offline, capsys):
    assert offline["code"] == 0, offline["log"]
    # The shared run's store stands in for the server once it is back up.
    server = offline["shared"].tracking_uri
    parser = argparse.ArgumentParser()
    sync.add_arguments(parser)
    args = parser.parse_args(["--from", offline["store"], "--to", server])
    assert sync.run(args) == 0
    assert "copied 1 run(s)" in capsys.readouterr().out

    source, target = MlflowClient(offline["store"]), MlflowClient(server)
    (original,) = source.search_runs([source.get_experiment_by_name(EXPERIMENT).experiment_id])
    (copy,) = target.search_runs([target.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert copy.info.status == "FINISHED" and copy.info.run_name == original.info.run_name
    assert copy.data.tags["progression.synced_from"] == original.info.run_id
    assert copy.data.params == original.data.params
    for key in original.data.metrics:
        history = [(m.step, m.value, m.timestamp)
                   for m in source.get_metric_history(original.info.run_id, key)]
        assert sorted((m.step, m.value, m.timestamp)
                      for m in target.get_metric_history(copy.info.run_id, key)) == sorted(history)
    assert {a.path for a in target.list_artifacts(copy.info.run_id)} >= {"checkpoints", "config"}
    (logged,) = target.search_logged_models(
        experiment_ids=[copy.info.experiment_id],
        filter_string=f"source_run_id = '{copy.info.run_id}'")
    model = Path(mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location,
                                                     tracking_uri=server))
    assert list(model.rglob("*.ckpt"))  # the pyfunc model was logged again on the server

    assert sync.run(args) == 0  # a second sync finds everything there already
    assert "copied 0 run(s)" in capsys.readouterr().out
    assert len(target.search_runs([copy.info.experiment_id])) == 1
