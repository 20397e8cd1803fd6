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
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from test_reliability_support import kill_while_writing
from test_train_support import shared_run

from progression import cli

EXPERIMENT = "reliability-resume"


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _other_file_system_tmpdir() -> dict[str, str]:
    """TMPDIR on another file system than the outputs (tmpfs /dev/shm), as on many Linux
    machines: a writer that renames a temporary file from $TMPDIR falls back to a copy there."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != Path.cwd().stat().st_dev:
        return {"TMPDIR": str(shm)}
    return {}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """The shared run's config trained in a subprocess, SIGKILLed while it saves its second
    ``last.ckpt`` (epoch 1 trained, its checkpoint and metrics not yet written), then resumed
    in this process with ``progression train --resume``."""
    reference = shared_run(tmp_path_factory)
    root = tmp_path_factory.mktemp("resume")
    runs = root / "runs"
    overrides = [o for o in reference.overrides
                 if not o.startswith(("train.output_dir=", "tracking.experiment="))]
    overrides += [f"train.output_dir={runs}", f"tracking.experiment={EXPERIMENT}",
                  "tracking.log_model=false"]
    log = root / "killed.log"
    code = kill_while_writing(["train", "--config", "tiny", *overrides],
                              runs / "*" / "checkpoints" / "last.ckpt", skip=1, log=log,
                              env=_other_file_system_tmpdir())
    found = list(runs.glob("*/checkpoints/last.ckpt"))
    assert len(found) == 1, log.read_text()
    try:
        killed_at = torch.load(found[0], map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any failure to load means the file was damaged
        pytest.fail(f"last.ckpt is damaged after the kill ({type(exc).__name__}: {exc})")
    client = MlflowClient(reference.tracking_uri)
    run_id = killed_at["progression"]["mlflow"]["run_id"]
    return {
        "reference": reference, "client": client, "run_id": run_id, "last": found[0],
        "kill_code": code, "killed_epoch": killed_at["epoch"],
        "status_after_kill": client.get_run(run_id).info.status,
        "history_after_kill": _history(client, run_id, "train/loss"),
        "killed_log": log.read_text(),
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


def test_train_killed_while_saving_a_checkpoint_leaves_the_previous_one_whole(interrupted):
    assert interrupted["kill_code"] == -signal.SIGKILL, interrupted["killed_log"]
    assert interrupted["killed_epoch"] == 0  # epoch 1's checkpoint never replaced epoch 0's
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
        # the reference at the same steps: another test may resume the shared run further
        expected = dict(_history(client, reference_id, key))
        history = _history(client, interrupted["run_id"], key)
        for step, value in history:
            assert math.isclose(value, expected[step], rel_tol=1e-5, abs_tol=1e-6), (key, step)
        final_step = history[-1][0]
        assert math.isclose(got[key], expected[final_step], rel_tol=1e-5, abs_tol=1e-6), key
    final = torch.load(interrupted["last"], map_location="cpu", weights_only=False)
    assert final["epoch"] == interrupted["max_epochs"] - 1 and final["progression"]["mlflow"]["run_id"] == interrupted["run_id"]
