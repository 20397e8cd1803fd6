"""DDP on CPU: two processes (gloo) train one model and log exactly one MLflow run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient
from test_train_support import simulated_cohort, tiny_overrides


@pytest.mark.slow
def test_two_process_ddp_fit_logs_exactly_one_mlflow_run(tmp_path_factory, tmp_path):
    cohort = simulated_cohort(tmp_path_factory)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    overrides = tiny_overrides(cohort, tmp_path, uri, **{
        "train.max_epochs": 3, "train.image_epochs": 1, "tracking.experiment": "ddp",
        "tracking.log_model": False, "train.strategy": "ddp", "train.devices": 2,
        "train.accelerator": "cpu"})
    overrides = [o for o in overrides if not o.startswith("data.path=")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "progression.cli", "train", "--data", str(cohort), "--config",
         "tiny", *overrides], capture_output=True, text=True, timeout=540, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reported = [line for line in proc.stdout.splitlines() if line.startswith("run id")]
    assert len(reported) == 1  # only rank 0 reports
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ddp")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == reported[0].split()[-1]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.strategy"] == "ddp"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) == 3  # one value per epoch, not one per process
    assert "val/mae_delta_1y" in run.data.metrics
    assert list((tmp_path / "runs" / run.info.run_id / "checkpoints").glob("*.ckpt"))
