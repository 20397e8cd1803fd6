"""Interrupted training resumes: `progression train` SIGKILLed mid-run and started again with
``--resume`` continues the same MLflow run and ends exactly where an uninterrupted run ends.

The uninterrupted reference is the session's shared tiny fit (test_train_support.py): same
config, same seed, one CPU thread. See docs/failure_modes.md for the determinism conditions.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from test_train_support import shared_run

from progression import cli

EXPERIMENT = "reliability-resume"


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _kill_mid_epoch(argv: list[str], runs: Path, client: MlflowClient, log: Path) -> tuple[Path, int]:
    """Start ``progression train`` in a subprocess and SIGKILL it in the epoch after its first
    checkpoint: once ``last.ckpt`` exists and the epoch it closes has logged ``train/loss``
    (Lightning logs that right after saving), the process is training the next epoch.
    Returns the checkpoint and the subprocess's exit status."""
    last, done_step = None, None
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "progression.cli", *argv],
                                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if last is None:
                    found = list(runs.glob("*/checkpoints/last.ckpt"))
                    if found:
                        last = found[0]
                        ckpt = torch.load(last, map_location="cpu", weights_only=False)
                        done_step = ckpt["global_step"] - 1  # step of its epoch's metrics
                        run_id = ckpt["progression"]["mlflow"]["run_id"]
                elif any(m.step >= done_step for m in client.get_metric_history(run_id, "train/loss")):
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.01)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert last is not None, log.read_text()
    return last, proc.returncode


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """The shared run's config trained in a subprocess, killed after its first checkpoint,
    then resumed in this process with ``progression train --resume``."""
    reference = shared_run(tmp_path_factory)
    root = tmp_path_factory.mktemp("resume")
    runs = root / "runs"
    overrides = [o for o in reference.overrides
                 if not o.startswith(("train.output_dir=", "tracking.experiment="))]
    overrides += [f"train.output_dir={runs}", f"tracking.experiment={EXPERIMENT}",
                  "tracking.log_model=false"]
    client = MlflowClient(reference.tracking_uri)
    last, code = _kill_mid_epoch(["train", "--config", "tiny", *overrides], runs, client,
                                 root / "killed.log")
    killed_at = torch.load(last, map_location="cpu", weights_only=False)
    run_id = killed_at["progression"]["mlflow"]["run_id"]
    status_after_kill = client.get_run(run_id).info.status
    history_after_kill = _history(client, run_id, "train/loss")
    return {
        "reference": reference, "client": client, "run_id": run_id, "last": last,
        "kill_code": code, "killed_epoch": killed_at["epoch"],
        "status_after_kill": status_after_kill, "history_after_kill": history_after_kill,
        "killed_log": (root / "killed.log").read_text(),
        "max_epochs": int(next(o.split("=", 1)[1] for o in overrides
                               if o.startswith("train.max_epochs="))),
    }


@pytest.fixture(scope="module")
def resumed(interrupted):
    """``progression train --resume last.ckpt``: the checkpoint's own config, nothing else."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["train", "--resume", str(interrupted["last"])])
    return {"code": code, "output": out.getvalue()}


def test_train_was_killed_mid_run_with_a_checkpoint_to_resume_from(interrupted):
    assert interrupted["kill_code"] == -signal.SIGKILL, interrupted["killed_log"]
    assert interrupted["killed_epoch"] < interrupted["max_epochs"] - 1  # before its last epoch
    assert interrupted["status_after_kill"] == "RUNNING"  # nobody closed the run


def test_resume_continues_the_same_mlflow_run_without_a_duplicate(interrupted, resumed):
    assert resumed["code"] == 0, resumed["output"]
    assert f"run id      {interrupted['run_id']}" in resumed["output"]
    client = interrupted["client"]
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [interrupted["run_id"]]
    assert runs[0].info.status == "FINISHED"
    # the history logged before the kill is kept, and continues at later steps
    after = _history(client, interrupted["run_id"], "train/loss")
    before = interrupted["history_after_kill"]
    assert after[: len(before)] == before
    assert len({step for step, _ in after}) == interrupted["max_epochs"]  # one per epoch


def test_resumed_run_ends_with_the_metrics_of_an_uninterrupted_run(interrupted, resumed):
    assert resumed["code"] == 0, resumed["output"]
    client = interrupted["client"]
    reference_id = interrupted["reference"].result.run_id
    reference = client.get_run(reference_id).data.metrics
    got = client.get_run(interrupted["run_id"]).data.metrics
    compared = sorted(k for k in reference if k.startswith(("train/", "val/")))
    assert {"train/loss", "val/loss", "val/mae_delta"} <= set(compared)
    for key in compared:
        expected = dict(_history(client, reference_id, key))
        for step, value in _history(client, interrupted["run_id"], key):
            assert math.isclose(value, expected[step], rel_tol=1e-5, abs_tol=1e-6), (key, step)
        assert math.isclose(got[key], reference[key], rel_tol=1e-5, abs_tol=1e-6), key
    final = torch.load(interrupted["last"], map_location="cpu", weights_only=False)
    assert final["epoch"] == interrupted["max_epochs"] - 1 and final["progression"]["mlflow"]["run_id"] == interrupted["run_id"]
