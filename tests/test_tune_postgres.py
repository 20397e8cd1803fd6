"""A study shared through PostgreSQL: several workers, and trials of lost workers retried.

Needs PostgreSQL binaries (initdb, pg_ctl); tests/pg.py starts a throw-away server on
127.0.0.1 and the tests are skipped, with the reason, where there are none.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from pg import postgres_server
from test_train_support import simulated_cohort, tiny_overrides

from progression.config import load_config
from progression.tuning.mlflow_runs import child_runs
from progression.tuning.space import parse_search_space
from progression.tuning.storage import OWNER_ATTR, open_storage, reap_dead_trials
from progression.tuning.study import tune

pytestmark = pytest.mark.postgres

SPACE = """
sampler: {type: random, seed: 0}
pruner: {type: none}
params:
  train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


def _running_trial_with_a_run(runner, storage, client: MlflowClient) -> optuna.trial.FrozenTrial:
    """The first RUNNING trial whose MLflow run has started (bounded wait)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert runner.is_alive(), "the study ended before a worker could be killed"
        try:
            study = optuna.load_study(study_name="shared", storage=storage)
        except KeyError:  # the study is not created yet
            study = None
        experiment = client.get_experiment_by_name("tests")
        if study is not None and experiment is not None:
            for trial in study.get_trials(states=(TrialState.RUNNING,)):
                runs = client.search_runs(
                    [experiment.experiment_id],
                    f"tags.`optuna.trial_number` = '{trial.number}' and attributes.status = 'RUNNING'",
                )
                if OWNER_ATTR in trial.user_attrs and runs:
                    return trial
        time.sleep(0.3)
    raise AssertionError("no trial started within 10 minutes")


def test_two_workers_share_the_study_and_a_killed_workers_trial_is_retried(
    pg_url, tmp_path_factory, tmp_path
):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    cfg = load_config("tiny", tiny_overrides(
        simulated_cohort(tmp_path_factory), tmp_path, uri,
        **{"train.max_epochs": 2, "train.image_epochs": 0, "tracking.log_model": False}))
    space = parse_search_space(SPACE, cfg)
    client = MlflowClient(uri)
    storage = open_storage(pg_url)  # one connection pool for all the polling
    outcome: list = []

    def run_study() -> None:
        outcome.append(tune(cfg, space, "shared", storage=pg_url, n_trials=2, workers=2,
                            progress=False))

    # The study's own process runs in a thread here; its two workers are spawned processes.
    runner = threading.Thread(target=run_study)
    runner.start()
    try:
        victim = _running_trial_with_a_run(runner, storage, client)
        pid = victim.user_attrs[OWNER_ATTR]["pid"]
        assert pid != os.getpid()  # a spawned worker
        os.kill(pid, signal.SIGKILL)
    finally:
        runner.join(timeout=900)
    (first,) = outcome
    (error,) = first.worker_errors  # reported, and the run asks for a rerun
    assert error.endswith(f"(pid {pid}) ended with signal 9")

    rerun = tune(cfg, space, "shared", storage=pg_url, n_trials=2, workers=2, progress=False)
    assert rerun.worker_errors == []

    study = optuna.load_study(study_name="shared", storage=storage)
    lost = study.trials[victim.number]
    assert lost.state == TrialState.FAIL
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == lost.params
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2
    workers = {t.user_attrs[OWNER_ATTR]["pid"] for t in study.trials if OWNER_ATTR in t.user_attrs}
    assert pid in workers and len(workers - {pid}) >= 1  # both workers ran trials

    (killed_run,) = child_runs(client, first.parent_run_id)[victim.number]
    assert killed_run.info.status == "KILLED"
    assert killed_run.data.tags["optuna.trial_state"] == "FAIL"
    assert rerun.parent_run_id == first.parent_run_id
    assert client.get_run(first.parent_run_id).data.tags["optuna.storage"] == pg_url


def test_trial_of_a_machine_that_went_silent_is_requeued_after_the_grace_period(pg_url):
    storage = open_storage(pg_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="silent", storage=storage)
    trial = study.ask()
    trial.suggest_float("train.lr", 1e-4, 1e-2, log=True)
    # Its worker ran on another machine (so its pid cannot be checked here), then went silent.
    trial.set_user_attr(OWNER_ATTR, {"host": "gpu-node-7", "pid": 4242, "pid_start": 1})
    storage.record_heartbeat(trial._trial_id)
    reap_dead_trials(study)
    assert study.trials[0].state == TrialState.RUNNING  # within the grace period: trusted

    time.sleep(3)
    reap_dead_trials(study)

    lost, retry = study.trials
    assert lost.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING
    assert retry.params == lost.params
    assert retry.system_attrs["failed_trial"] == 0
    assert OWNER_ATTR not in retry.user_attrs
