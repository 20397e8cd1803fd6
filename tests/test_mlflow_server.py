"""Training against a real MLflow tracking server: params, metrics and artifacts arrive.

The server (``mlflow server``, one worker, SQLite backend, artifacts proxied to a local
directory) runs on a free 127.0.0.1 port for this test only and is stopped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pg import cleanup_if_killed, free_port
from test_train_support import simulated_cohort, tiny_overrides

from progression.config import load_config, to_dict
from progression.tracking import redact_config
from progression.train import fit


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def running_server(directory: Path):
    """A running ``mlflow server`` (URL) with its store ``directory/server.db`` and its
    artifacts in ``directory/artifacts``; stopped on exit."""
    db = f"sqlite:///{directory / 'server.db'}"
    # Create the schema here, where MLflow is already imported: the server starts faster.
    MlflowClient(db).search_experiments(max_results=1)
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (directory / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
         "--port", url.rsplit(":", 1)[1], "--workers", "1", "--backend-store-uri", db,
         "--artifacts-destination", str(directory / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    watchdog = cleanup_if_killed(["kill", "-TERM", f"-{proc.pid}"])
    try:
        deadline = time.monotonic() + 300
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not become healthy:\n{(directory / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        watchdog.kill()
        watchdog.wait()
        with contextlib.suppress(ProcessLookupError):  # gone already if it failed to start
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group: it and uvicorn
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


@pytest.fixture()
def mlflow_server(tmp_path):
    """URL of a running ``mlflow server``; its artifacts land in ``tmp_path/artifacts``."""
    with running_server(tmp_path) as url:
        yield url


def test_training_run_is_recorded_by_a_tracking_server(mlflow_server, tmp_path_factory, tmp_path):
    cohort = simulated_cohort(tmp_path_factory)
    overrides = tiny_overrides(
        cohort, tmp_path, mlflow_server,
        **{"train.max_epochs": 2, "train.image_epochs": 0, "tracking.experiment": "server"},
    )
    cfg = load_config("tiny", overrides)

    result = fit(cfg)

    client = MlflowClient(mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "server"
    assert float(run.data.params["train.lr"]) == cfg.train.lr
    assert run.data.params["data.image_size"] == "32"
    assert run.data.tags["cohort_fingerprint"]
    history = client.get_metric_history(result.run_id, "val/mae_delta_1y")
    assert [m.step for m in history] == sorted(m.step for m in history) and len(history) == 2
    assert run.data.metrics["val/mae_delta_1y"] == pytest.approx(result.metrics["val/mae_delta_1y"])

    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"checkpoints", "config"} <= artifacts
    config_copy = client.download_artifacts(result.run_id, "config/config.yaml", str(tmp_path))
    # the resolved config with its paths cut to their last component (docs/mlflow.md, Privacy)
    assert to_dict(load_config(config_copy)) == redact_config(cfg)
    # The files went through the server into its artifact directory, not to a local path.
    stored = {p.name for p in (tmp_path / "artifacts").rglob("*") if p.is_file()}
    assert {"config.yaml", Path(result.checkpoint_path).name} <= stored
    models = client.search_logged_models([run.info.experiment_id], f"source_run_id = '{result.run_id}'")
    assert len(models) == 1  # the pyfunc model `predict` and `register` use
