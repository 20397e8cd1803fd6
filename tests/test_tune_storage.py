"""Study storage: a trial whose worker process died is failed and queued again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import optuna
import pytest
from optuna.trial import TrialState

from progression.tuning.storage import (
    OWNER_ATTR,
    describe_storage,
    open_storage,
    owner_record,
    reap_dead_trials,
)

WORKER = textwrap.dedent(
    """
    import sys, time, optuna
    from progression.tuning.storage import OWNER_ATTR, open_storage, owner_record
    study = optuna.load_study(study_name="s", storage=open_storage(sys.argv[1]))
    trial = study.ask()
    trial.set_user_attr(OWNER_ATTR, owner_record())
    trial.suggest_float("train.lr", 1e-4, 1e-2, log=True)
    print("running", flush=True)
    time.sleep(600)
    """
)


def _start_trial_and_kill_its_worker(storage_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, storage_path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "running"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture()
def journal(tmp_path):
    path = str(tmp_path / "study.journal")
    optuna.create_study(study_name="s", storage=open_storage(path))
    return path


def test_killed_workers_trial_is_failed_and_requeued_with_the_same_params(journal):
    _start_trial_and_kill_its_worker(journal)
    study = optuna.load_study(study_name="s", storage=open_storage(journal))
    assert study.trials[0].state == TrialState.RUNNING  # nothing else notices a dead worker

    reaped = reap_dead_trials(study)

    assert [t.number for t in reaped] == [0]
    first, retry = study.trials
    assert first.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING
    assert retry.params == first.params
    assert retry.system_attrs["failed_trial"] == 0
    assert OWNER_ATTR not in retry.user_attrs  # the dead owner must not be inherited
    assert reap_dead_trials(study) == []  # a second look queues nothing more
    assert len(study.trials) == 2


def test_retried_trial_is_run_by_the_next_optimize(journal):
    _start_trial_and_kill_its_worker(journal)
    study = optuna.load_study(study_name="s", storage=open_storage(journal))
    reap_dead_trials(study)
    lost_lr = study.trials[0].params["train.lr"]

    study.optimize(lambda t: t.suggest_float("train.lr", 1e-4, 1e-2, log=True), n_trials=1)

    assert study.trials[1].state == TrialState.COMPLETE
    assert study.trials[1].value == lost_lr


def test_trial_that_keeps_losing_its_worker_is_retried_at_most_max_retry_times(journal):
    study = optuna.load_study(study_name="s", storage=open_storage(journal))
    for _ in range(2):
        _start_trial_and_kill_its_worker(journal)  # the second worker picks up the queued retry
        reap_dead_trials(study, max_retry=1)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert study.trials[1].system_attrs["retry_history"] == [0]
    assert study.trials[1].params == study.trials[0].params


def test_trial_of_a_live_worker_is_left_alone(journal):
    study = optuna.load_study(study_name="s", storage=open_storage(journal))
    trial = study.ask()
    trial.set_user_attr(OWNER_ATTR, owner_record())  # this very process: alive
    assert reap_dead_trials(study) == []
    assert study.trials[0].state == TrialState.RUNNING


def test_trial_of_another_host_is_left_to_heartbeats(journal):
    study = optuna.load_study(study_name="s", storage=open_storage(journal))
    trial = study.ask()
    trial.set_user_attr(OWNER_ATTR, {"host": "some-other-machine", "pid": 1, "pid_start": 0})
    assert reap_dead_trials(study) == []


def test_storage_url_is_shown_without_its_password():
    text = describe_storage("postgresql://tuner:s3cret@db.example.org:5432/optuna")
    assert "s3cret" not in text
    assert text == "postgresql://tuner:***@db.example.org:5432/optuna"


def test_unreachable_database_is_a_clear_error():
    from progression.errors import ProgressionError

    with pytest.raises(ProgressionError, match=r"cannot open the Optuna storage 'postgresql://u:\*\*\*@127\.0\.0\.1:9/x'"):
        open_storage("postgresql://u:pw@127.0.0.1:9/x")
