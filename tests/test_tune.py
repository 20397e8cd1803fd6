"""End-to-end hyper-parameter search: real Optuna studies of real tiny fits, tracked in MLflow.

The cohort (12 simulated patients, 32 px films) is shared with the model tests; each test has
its own MLflow store and study. Trials train the sequence stage only, 2 epochs, and log no
pyfunc model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from test_train_support import simulated_cohort, tiny_overrides

from progression import cli
from progression.config import load_config
from progression.tracking import redact
from progression.tuning.storage import OWNER_ATTR, default_storage, open_storage
from progression.tuning.study import load_search_space, tune

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

RANDOM_SPACE = """
metric: val/mae_delta_1y
direction: minimize
sampler: {type: random, seed: 0}
pruner: {type: none}
params:
  train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  model.dropout: {type: float, low: 0.0, high: 0.3}
"""

# A 1-year change off by more than 100 SvdH units on average only happens when training
# diverged, as it does with a learning rate of 10^4.
DIVERGING_SPACE = """
metric: val/mae_delta_1y
direction: minimize
sampler: {type: grid, seed: 0}
pruner: {type: threshold, upper: 100.0}
params:
  train.lr: {type: categorical, choices: [0.003, 10000.0]}
"""


@pytest.fixture()
def setup(tmp_path_factory, tmp_path):
    """(overrides, tracking URI, search-space writer) for a study in its own MLflow store."""
    cohort = simulated_cohort(tmp_path_factory)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    # No pyfunc model per trial (nothing here registers one): 1-2 s less per trial.
    overrides = tiny_overrides(cohort, tmp_path, uri, **{
        "train.max_epochs": 2, "train.image_epochs": 0, "tracking.log_model": False})

    def space(text: str) -> Path:
        path = tmp_path / "space.yaml"
        path.write_text(text)
        return path

    return overrides, uri, space


def _study(cfg, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(default_storage(cfg, name)))


def _child_runs(client: MlflowClient, parent_run_id: str) -> dict[int, list]:
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )
    by_trial: dict[int, list] = {}
    for run in runs:
        by_trial.setdefault(int(run.data.tags["optuna.trial_number"]), []).append(run)
    return by_trial


def test_two_workers_share_one_study_with_one_child_run_per_trial(setup):
    overrides, uri, write_space = setup
    cfg = load_config("tiny", overrides)
    space = load_search_space(write_space(RANDOM_SPACE), cfg)

    result = tune(cfg, space, "parallel", n_trials=4, workers=2, progress=False)

    assert result.worker_errors == []
    study = _study(cfg, "parallel")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 4
    owners = {t.user_attrs[OWNER_ATTR]["pid"] for t in study.trials}
    assert len(owners) == 2 and os.getpid() not in owners  # two spawned worker processes

    client = MlflowClient(uri)
    children = _child_runs(client, result.parent_run_id)
    assert sorted(children) == [0, 1, 2, 3]
    for number, (run,) in children.items():
        trial = study.trials[number]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"tune/parallel/trial-{number:03d}"
        assert run.data.tags["optuna.trial_state"] == "COMPLETE"
        assert float(run.data.params["train.lr"]) == pytest.approx(trial.params["train.lr"])
        assert run.data.params["data.image_size"] == "32"  # the full resolved config
        history = client.get_metric_history(run.info.run_id, "val/mae_delta_1y")
        assert len(history) == 2  # one value per epoch

    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna.study_name"] == "parallel"
    # the journal file's name: no absolute path of this machine in a run
    assert parent.data.tags["optuna.storage"] == redact(default_storage(cfg, "parallel"))
    best = min(study.trials, key=lambda t: t.value)
    assert result.best_trial == best.number
    assert parent.data.metrics["val/mae_delta_1y"] == pytest.approx(best.value)
    assert parent.data.tags["best.trial_number"] == str(best.number)
    assert parent.data.tags["best.run_id"] == result.best_run_id == children[best.number][0].info.run_id
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"best_config.yaml", "search_space.yaml", "trials.csv", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}
    assert plots == {
        "plots/optimization_history.png",
        "plots/param_importances.png",
        "plots/parallel_coordinate.png",
    }
    # The best config is a config `progression train --config` accepts, with the best values.
    best_cfg = load_config(result.best_config_path)
    assert best_cfg.train.lr == pytest.approx(best.params["train.lr"])
    assert best_cfg.model.dropout == pytest.approx(best.params["model.dropout"])


def _wait_for_running_trial(proc, cfg, name: str, client: MlflowClient) -> int:
    """Pid of the worker once trial 0 is RUNNING and its MLflow run exists (bounded wait)."""
    deadline = time.monotonic() + 600
    journal = Path(default_storage(cfg, name))
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the tune command ended before it could be interrupted"
        experiment = client.get_experiment_by_name(cfg.tracking.experiment)
        if journal.exists() and experiment is not None:
            running = [
                t for t in _study(cfg, name).get_trials(states=(TrialState.RUNNING,))
                if OWNER_ATTR in t.user_attrs
            ]
            runs = client.search_runs(
                [experiment.experiment_id],
                "tags.`optuna.trial_number` = '0' and attributes.status = 'RUNNING'",
            )
            if running and runs:
                return running[0].user_attrs[OWNER_ATTR]["pid"]
        time.sleep(0.2)
    raise AssertionError("no trial started within 10 minutes")


def test_trial_of_a_killed_worker_is_retried_when_the_command_is_rerun(setup):
    overrides, uri, write_space = setup
    cfg = load_config("tiny", overrides)
    args = ["tune", "--config", "tiny", "--space", str(write_space(RANDOM_SPACE)),
            "--study", "resume", "--n-trials", "2", "--no-progress", *overrides]
    client = MlflowClient(uri)
    proc = subprocess.Popen(
        [sys.executable, "-m", "progression.cli", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        pid = _wait_for_running_trial(proc, cfg, "resume", client)
        assert pid == proc.pid  # one worker: it runs inside the command's own process
        os.kill(pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert _study(cfg, "resume").trials[0].state == TrialState.RUNNING  # nobody left to say

    assert cli.main(args) == 0  # the same command again

    study = _study(cfg, "resume")
    lost = study.trials[0]
    assert lost.state == TrialState.FAIL
    assert lost.system_attrs["fail_reason"] == f"worker pid {pid} died"
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].params == lost.params
    assert len(study.get_trials(states=FINISHED)) == 2

    parents = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id],
        "tags.`progression.kind` = 'study'",
    )
    assert len(parents) == 1  # the rerun continued the study's parent run
    assert parents[0].info.status == "FINISHED"
    children = _child_runs(client, parents[0].info.run_id)
    (killed,) = children[0]
    assert killed.info.status == "KILLED"
    assert killed.data.tags["optuna.trial_state"] == "FAIL"
    assert children[retries[0].number][0].data.tags["optuna.trial_state"] == "COMPLETE"


def test_diverging_trial_is_pruned_after_its_first_epoch(setup):
    overrides, uri, write_space = setup
    cfg = load_config("tiny", overrides)
    space = load_search_space(write_space(DIVERGING_SPACE), cfg)

    result = tune(cfg, space, "diverge", n_trials=2, workers=1, progress=False)

    by_lr = {t.params["train.lr"]: t for t in _study(cfg, "diverge").trials}
    diverged, sane = by_lr[10000.0], by_lr[0.003]
    assert diverged.state == TrialState.PRUNED
    assert list(diverged.intermediate_values) == [0]  # stopped after epoch 0 of 2
    assert diverged.intermediate_values[0] > 100.0
    assert sane.state == TrialState.COMPLETE
    assert list(sane.intermediate_values) == [0, 1]
    assert (result.n_complete, result.n_pruned, result.best_params) == (1, 1, {"train.lr": 0.003})

    client = MlflowClient(uri)
    children = _child_runs(client, result.parent_run_id)
    (pruned_run,) = children[diverged.number]
    assert pruned_run.data.tags["optuna.trial_state"] == "PRUNED"
    assert len(client.get_metric_history(pruned_run.info.run_id, "val/mae_delta_1y")) == 1
    assert children[sane.number][0].data.tags["optuna.trial_state"] == "COMPLETE"
