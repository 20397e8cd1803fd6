"""Where an Optuna study lives, and how a trial whose worker died gets retried.

Two kinds of storage, chosen by the ``--storage`` string:

- a file path (the default, ``<train.output_dir>/tune/<study>/study.journal``): Optuna's
  ``JournalStorage`` on a ``JournalFileBackend``. It is an append-only log guarded by a lock
  file, safe for several local worker processes, where SQLite is not meant for many
  concurrent writers ("database is locked").
- an SQLAlchemy URL (``postgresql://user:pass@host/db``): Optuna's ``RDBStorage``, shared by
  invocations on several machines, with Optuna's heartbeat: a trial whose heartbeat stops
  for ``grace_period`` seconds is failed and re-queued by whichever worker looks next.

``JournalStorage`` has no heartbeat in Optuna 5.0.0 (it does not implement
``BaseHeartbeat``), so for it a trial records its owner (host, pid, process start time) and
:func:`reap_dead_trials` fails and re-queues a RUNNING trial whose owner process on this host
no longer exists. The same check runs on RDB storage too, where it is immediate instead of
waiting for the grace period.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Any

from progression.config import Config
from progression.errors import ConfigError, ProgressionError

log = logging.getLogger(__name__)

RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
OWNER_ATTR = "worker"  # trial user attribute: {"host", "pid", "pid_start"}


def default_storage(cfg: Config, study_name: str) -> str:
    """The journal file a study uses when no ``--storage`` is given (absolute path)."""
    return str((Path(cfg.train.output_dir) / "tune" / study_name / "study.journal").resolve())


def is_rdb(storage: str) -> bool:
    return "://" in storage


def describe_storage(storage: str) -> str:
    """The storage as safe to show and log: an RDB URL with its password replaced by ***."""
    if not is_rdb(storage):
        return storage
    from sqlalchemy.engine import make_url

    return make_url(storage).render_as_string(hide_password=True)


def open_storage(
    storage: str,
    *,
    heartbeat_interval: int = 60,
    grace_period: int | None = None,
    max_retry: int = 2,
) -> Any:
    """An Optuna storage object for ``storage`` (a journal file path or an RDB URL).

    ``heartbeat_interval`` and ``grace_period`` (seconds) apply to RDB storage only; a trial
    silent for ``grace_period`` (default twice the interval) is failed and re-queued up to
    ``max_retry`` times.
    """
    import optuna

    if not is_rdb(storage):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    scheme = storage.split("://", 1)[0].split("+", 1)[0]
    if scheme not in RDB_SCHEMES:
        raise ConfigError(
            f"storage '{describe_storage(storage)}': unsupported scheme '{scheme}'; give a journal "
            "file path or a postgresql:// (or mysql://, sqlite:///) URL"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                _with_installed_driver(storage),
                engine_kwargs={"pool_pre_ping": True} if scheme != "sqlite" else None,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=RetryTrial(max_retry),
            )
        except Exception as exc:  # connection refused, bad credentials, missing driver
            raise ProgressionError(
                f"cannot open the Optuna storage '{describe_storage(storage)}': {exc}; check the "
                "URL, that the database server is running, and that the database exists"
            ) from None


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` means psycopg (3) to SQLAlchemy 2.1; use psycopg2 when only it is installed."""
    import importlib.util

    find = importlib.util.find_spec
    if url.startswith("postgresql://") and find("psycopg") is None and find("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a Linux process, None elsewhere."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[19])


def owner_record() -> dict[str, Any]:
    """Who runs a trial: stored on the trial so a later invocation can tell if it died."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {"host": socket.gethostname(), "pid": pid, "pid_start": stat[1] if stat else None}


def owner_is_dead(owner: dict[str, Any]) -> bool:
    """True only when the owner ran on this host and its process is gone (or is a zombie)."""
    if owner.get("host") != socket.gethostname():
        return False  # another machine: RDB heartbeats cover it
    pid = int(owner["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by another user
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, started = stat
    # A zombie is dead; a different start time means the pid was reused by a new process.
    return state in ("Z", "X") or (owner.get("pid_start") not in (None, started))


class RetryTrial:
    """Re-queue a trial that stopped without finishing, like Optuna's
    ``RetryHeartbeatStaleTrialCallback`` (same ``failed_trial``/``retry_history`` attributes),
    but without copying the dead owner's record onto the new trial."""

    def __init__(self, max_retry: int = 2) -> None:
        self.max_retry = max_retry

    def __call__(self, study: Any, trial: Any) -> None:
        import optuna

        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retry:
            log.warning("trial %d failed %d times; not retrying it again", trial.number, len(history))
            return
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={k: v for k, v in trial.user_attrs.items() if k != OWNER_ATTR},
                system_attrs={
                    **trial.system_attrs,
                    "failed_trial": history[0],
                    "retry_history": history,
                },
            )
        )


def reap_dead_trials(study: Any, max_retry: int = 2) -> list[Any]:
    """Fail every RUNNING trial whose worker died, and re-queue it (up to ``max_retry`` times).

    Runs Optuna's heartbeat check first when the storage has one (RDB). Returns the trials
    this call failed (FrozenTrial, state as before failing) so their MLflow runs can be closed.
    """
    import optuna
    from optuna.storages._heartbeat import is_heartbeat_enabled
    from optuna.trial import TrialState

    storage = study._storage
    if is_heartbeat_enabled(storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER_ATTR)
        if not owner or not owner_is_dead(owner):
            continue
        try:
            storage.set_trial_system_attr(trial._trial_id, "fail_reason", f"worker pid {owner['pid']} died")
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished or reaped by someone else meanwhile
        log.warning(
            "trial %d: its worker (pid %s on %s) died; marked FAIL and queued for retry",
            trial.number, owner["pid"], owner["host"],
        )
        RetryTrial(max_retry)(study, storage.get_trial(trial._trial_id))
        reaped.append(trial)
    return reaped
