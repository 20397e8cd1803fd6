"""Hyper-parameter search: an Optuna study whose trials are ``progression train`` runs.

``tune(cfg, space, study_name, storage, n_trials, workers)`` runs trials until the study
holds ``n_trials`` finished (complete or pruned) trials, so re-running the same command
resumes an interrupted study. Trials run in ``workers`` local processes (spawned; one
process runs in-line) that share the study through its storage; invocations on other
machines join the same study through a PostgreSQL URL (see ``docs/tuning.md``).

Each trial is one :func:`progression.train.fit` call, tracked in MLflow as a child of the
study's parent run (:mod:`progression.tuning.mlflow_runs`), pruned epoch by epoch by
:class:`~progression.tuning.pruning.OptunaPruning`. A trial whose worker died (killed,
out of memory, machine lost) is failed and queued again (:mod:`progression.tuning.storage`).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from progression.config import Config
from progression.errors import ConfigError, ProgressionError
from progression.tracking import check_tracking, resolve_tracking_uri
from progression.tuning.mlflow_runs import (
    TAG_STATE,
    best_config,
    child_runs,
    close_failed_trial_runs,
    finalize_parent,
    open_parent_run,
    trial_run_name,
    trial_tags,
)
from progression.tuning.pruning import OptunaPruning
from progression.tuning.space import SearchSpace, apply_params, load_search_space
from progression.tuning.storage import (
    OWNER_ATTR,
    default_storage,
    describe_storage,
    open_storage,
    owner_record,
    reap_dead_trials,
)

__all__ = ["OptunaPruning", "SearchSpace", "TuneResult", "load_search_space", "tune"]

log = logging.getLogger(__name__)

SPACE_ATTR = "search_space"  # study user attribute: the space's fingerprint
MAX_CONSECUTIVE_FAILURES = 3  # a worker whose trials keep crashing stops instead of spinning
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _UserErrorFilter(logging.Filter):
    """Optuna logs a failed trial's exception with its traceback; a ProgressionError (bad data
    or config, the same for every trial) is printed once by the CLI instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, ProgressionError)


class TrialCrashed(Exception):
    """A trial's training raised an unexpected error: the trial is FAIL, the search goes on."""


@dataclass(frozen=True)
class _WorkerSpec:
    """Everything a worker process needs (picklable: it crosses a spawn boundary)."""

    cfg: Config
    space: SearchSpace
    study_name: str
    storage: str
    parent_run_id: str
    n_trials: int
    trials_so_far: int
    heartbeat_interval: int
    grace_period: int | None
    max_retry: int


@dataclass
class TuneResult:
    """What a study holds after ``tune`` (counts cover every invocation, not just this one)."""

    study_name: str
    storage: str  # password stripped
    parent_run_id: str
    n_complete: int
    n_pruned: int
    n_failed: int
    best_trial: int | None
    best_run_id: str | None  # the best trial's MLflow run (what `progression register` takes)
    best_value: float | None
    best_params: dict[str, Any]
    best_config_path: Path | None
    worker_errors: list[str] = field(default_factory=list)


def _finished_states() -> tuple[Any, ...]:
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def _count(study: Any, states: tuple[Any, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


class _Objective:
    """One trial = one ``fit`` with sampled params, pruning, and a child MLflow run."""

    def __init__(self, spec: _WorkerSpec) -> None:
        self.spec = spec
        self.consecutive_failures = 0

    def _tag_runs(self, number: int, state: str) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(self.spec.cfg.tracking.tracking_uri)
        for run in child_runs(client, self.spec.parent_run_id).get(number, []):
            client.set_tag(run.info.run_id, TAG_STATE, state)
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status="FAILED")

    def __call__(self, trial: Any) -> float:
        from progression.train import fit

        spec = self.spec
        trial.set_user_attr(OWNER_ATTR, owner_record())
        params = spec.space.suggest(trial)
        cfg = apply_params(
            best_config(spec.cfg, spec.space, params),
            {
                "tracking.run_name": trial_run_name(spec.study_name, trial.number),
                "train.monitor": spec.space.metric,  # the checkpoint kept is the trial's best
                "train.progress": False,  # the study shows one bar for all workers
                # A trial logged to a local fallback store would be cut off from its parent.
                "tracking.offline": False,
            },
        )
        pruning = OptunaPruning(trial, spec.space.metric)
        tags = {
            **trial_tags(spec.study_name, trial.number),
            "optuna.sampled_params": json.dumps(params, sort_keys=True),
        }
        try:
            result = fit(cfg, callbacks=[pruning], parent_run_id=spec.parent_run_id, extra_tags=tags)
        except ProgressionError:
            self._tag_runs(trial.number, "FAIL")
            raise  # a config or data problem: every trial would hit it, stop the search
        except Exception as exc:
            self._tag_runs(trial.number, "FAIL")
            self.consecutive_failures += 1
            log.error("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
            raise TrialCrashed(f"{type(exc).__name__}: {exc}") from exc
        self.consecutive_failures = 0
        trial.set_user_attr("mlflow_run_id", result.run_id)
        from mlflow import MlflowClient

        client = MlflowClient(spec.cfg.tracking.tracking_uri)
        if pruning.pruned:
            client.set_tag(result.run_id, TAG_STATE, "PRUNED")
            pruning.raise_if_pruned()
        # The best epoch's value (that checkpoint is what the trial produced), else the last.
        value = result.metrics.get(f"best/{spec.space.metric}", result.metrics.get(spec.space.metric))
        if value is None:
            client.set_tag(result.run_id, TAG_STATE, "FAIL")
            raise ConfigError(
                f"the search space's metric '{spec.space.metric}' is not among the metrics fit "
                f"returned ({', '.join(sorted(result.metrics))}); change 'metric' in the search space"
            )
        value = float(value)
        if math.isnan(value):
            client.set_tag(result.run_id, TAG_STATE, "FAIL")
            self.consecutive_failures += 1
            raise TrialCrashed(f"{spec.space.metric} is NaN (training diverged)")
        client.set_tag(result.run_id, TAG_STATE, "COMPLETE")
        return value


def _run_worker(spec: _WorkerSpec, index: int, progress: Any = None) -> None:
    """Run trials from this process until the study holds ``n_trials`` finished ones."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    # Import torch & co. now, not inside the first trial: while a C extension initialises,
    # the trial's heartbeat thread cannot run, and other workers would think it dead.
    importlib.import_module("progression.train")
    storage = open_storage(
        spec.storage,
        heartbeat_interval=spec.heartbeat_interval,
        grace_period=spec.grace_period,
        max_retry=spec.max_retry,
    )
    study = optuna.load_study(
        study_name=spec.study_name,
        storage=storage,
        sampler=spec.space.make_sampler(spec.space.worker_seed(index, spec.trials_so_far)),
        pruner=spec.space.make_pruner(),
    )
    # RUNNING trials count too, so parallel workers do not start more than n_trials.
    counted = (*_finished_states(), TrialState.RUNNING)
    if _count(study, counted) >= spec.n_trials:
        return
    objective = _Objective(spec)

    def stop_on_repeated_failures(study: Any, trial: Any) -> None:
        if objective.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            study.stop()

    callbacks = [MaxTrialsCallback(spec.n_trials, states=counted), stop_on_repeated_failures]
    if progress is not None:
        callbacks.append(lambda study, trial: progress(study))
    optuna_log = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _UserErrorFilter) for f in optuna_log.filters):
        optuna_log.addFilter(_UserErrorFilter())
    study.optimize(objective, n_trials=None, catch=(TrialCrashed,), callbacks=callbacks)
    if objective.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
        raise RuntimeError(
            f"worker {index} stopped after {MAX_CONSECUTIVE_FAILURES} trials in a row failed; "
            "see the errors above"
        )


def _worker_entry(spec: _WorkerSpec, index: int) -> None:
    """Entry point of a spawned worker process: exit 2 with a message on a user error."""
    import optuna

    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s worker {index}: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        _run_worker(spec, index)
    except ProgressionError as exc:
        print(f"error (worker {index}): {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def _open_study(storage_obj: Any, study_name: str, space: SearchSpace) -> Any:
    """Create or load the study; refuse to resume it with a different search space."""
    import optuna

    study = optuna.create_study(
        storage=storage_obj,
        study_name=study_name,
        direction=space.direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != space.direction:
        raise ConfigError(
            f"study '{study_name}' exists with direction {study.direction.name.lower()}; the search "
            f"space says {space.direction}. Use another --study name."
        )
    recorded = study.user_attrs.get(SPACE_ATTR)
    if recorded is None:
        study.set_user_attr(SPACE_ATTR, space.fingerprint())
    elif recorded != space.fingerprint():
        raise ConfigError(
            f"study '{study_name}' was created with a different search space (params, metric, "
            "sampler or pruner changed); resume it with the original space or use another --study name"
        )
    return study


def tune(
    cfg: Config,
    space: SearchSpace,
    study_name: str,
    storage: str | None = None,
    n_trials: int = 20,
    workers: int = 1,
    *,
    heartbeat_interval: int = 60,
    grace_period: int | None = None,
    max_retry: int = 2,
    progress: bool = True,
) -> TuneResult:
    """Run (or resume) the study ``study_name`` until it holds ``n_trials`` finished trials.

    ``storage``: a journal file path (default ``<train.output_dir>/tune/<study>/study.journal``)
    or an RDB URL such as ``postgresql://user:pass@host/db`` for workers on several machines.
    ``workers``: local processes running trials in parallel. ``heartbeat_interval`` /
    ``grace_period`` (seconds, RDB only): how fast a trial of a lost machine is retried;
    ``max_retry``: how often one trial is retried after its worker died. Results, the best
    config and plots go to MLflow (parent run ``tune/<study>``) and to
    ``<train.output_dir>/tune/<study>/``.
    """
    from mlflow import MlflowClient

    storage = _check_arguments(cfg, study_name, storage, n_trials, workers)
    storage_text = describe_storage(storage)
    # Resolved once, so every worker (and the parent run) uses the same store.
    cfg = apply_params(cfg, {"tracking.tracking_uri": resolve_tracking_uri(cfg)})
    check_tracking(cfg.tracking.tracking_uri)
    out_dir = Path(cfg.train.output_dir).resolve() / "tune" / study_name

    storage_obj = open_storage(
        storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry
    )
    study = _open_study(storage_obj, study_name, space)
    reap_dead_trials(study, max_retry)
    client = MlflowClient(cfg.tracking.tracking_uri)
    parent_run_id = open_parent_run(client, cfg.tracking.experiment, study, space, storage_text)
    close_failed_trial_runs(client, parent_run_id, study)
    log.info("study '%s' in %s; MLflow parent run %s", study_name, storage_text, parent_run_id)

    from optuna.trial import TrialState

    remaining = n_trials - _count(study, (*_finished_states(), TrialState.RUNNING))
    n_procs = max(0, min(workers, remaining))
    spec = _WorkerSpec(
        cfg=_trial_base(cfg, n_procs),
        space=space,
        study_name=study_name,
        storage=storage,
        parent_run_id=parent_run_id,
        n_trials=n_trials,
        trials_so_far=len(study.trials),
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retry=max_retry,
    )
    bar, show = _progress_bar(study, n_trials, progress)
    errors: list[str] = []
    status = "FINISHED"
    try:
        errors = _run_workers(spec, n_procs, study, client, parent_run_id, max_retry, show)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception:
        status = "FAILED"
        raise
    finally:
        bar.close()
        reap_dead_trials(study, max_retry)
        if errors:
            status = "FAILED"
        best_path = finalize_parent(client, parent_run_id, study, space, cfg, out_dir, status=status)
    return _result(study, storage_text, parent_run_id, best_path, errors)


def _progress_bar(study: Any, n_trials: int, progress: bool) -> tuple[Any, Any]:
    """A tqdm bar of the study's finished trials and the callback that moves it."""
    from tqdm.auto import tqdm

    bar = tqdm(
        total=n_trials,
        initial=min(n_trials, _count(study, _finished_states())),
        desc=f"tune {study.study_name}",
        unit="trial",
        disable=not progress,
    )

    def show(study: Any) -> None:
        done = min(n_trials, _count(study, _finished_states()))
        if done != bar.n:
            bar.update(done - bar.n)

    return bar, show


def _run_workers(spec: _WorkerSpec, n_procs: int, study: Any, client: Any, parent_run_id: str,
                 max_retry: int, show: Any) -> list[str]:
    """Trials in this process (one worker) or in ``n_procs`` processes; the workers' errors."""
    import optuna

    if n_procs == 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            _run_worker(spec, 0, progress=show)
    elif n_procs > 1:
        return _run_processes(spec, n_procs, study, client, parent_run_id, max_retry, show)
    return []


def _check_arguments(cfg: Config, study_name: str, storage: str | None, n_trials: int,
                     workers: int) -> str:
    """The study's storage (default: a journal file); ConfigError naming the bad option."""
    if not STUDY_NAME.match(study_name):
        raise ConfigError(f"study name '{study_name}': use letters, digits, '.', '_' and '-' only")
    if n_trials < 1 or workers < 1:
        raise ConfigError("--n-trials and --workers must be at least 1")
    storage = storage or default_storage(cfg, study_name)
    if workers > 1 and storage.startswith("sqlite"):
        log.warning(
            "SQLite is not meant for several writers ('database is locked'); with --workers > 1 "
            "prefer the default journal file or PostgreSQL"
        )
    return storage


def _trial_base(cfg: Config, n_procs: int) -> Config:
    """The config every trial starts from: with several local workers and ``train.threads``
    unset, the workers share the cores instead of each starting one thread per core."""
    if n_procs > 1 and cfg.train.threads == 0:
        return apply_params(cfg, {"train.threads": max(1, (os.cpu_count() or 1) // n_procs)})
    return cfg


def _result(study: Any, storage_text: str, parent_run_id: str, best_path: Path | None,
            errors: list[str]) -> TuneResult:
    """What the study holds now: trial counts by state and the best trial."""
    from optuna.trial import TrialState

    counts = {s: _count(study, (s,)) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    best = study.best_trial if counts[TrialState.COMPLETE] else None
    return TuneResult(
        study_name=study.study_name,
        storage=storage_text,
        parent_run_id=parent_run_id,
        n_complete=counts[TrialState.COMPLETE],
        n_pruned=counts[TrialState.PRUNED],
        n_failed=counts[TrialState.FAIL],
        best_trial=best.number if best else None,
        best_run_id=best.user_attrs.get("mlflow_run_id") if best else None,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        best_config_path=best_path,
        worker_errors=errors,
    )


def _run_processes(
    spec: _WorkerSpec,
    n_procs: int,
    study: Any,
    client: Any,
    parent_run_id: str,
    max_retry: int,
    show: Any,
) -> list[str]:
    """Spawn ``n_procs`` workers and wait; a worker that dies has its trial failed and
    re-queued at once. Returns one message per worker that did not exit cleanly."""
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_entry, args=(spec, i), name=f"tune-worker-{i}", daemon=False)
        for i in range(n_procs)
    ]
    for p in procs:
        p.start()
    errors: list[str] = []
    pending = list(procs)
    try:
        while pending:
            multiprocessing.connection.wait([p.sentinel for p in pending], timeout=2.0)
            for p in [p for p in pending if not p.is_alive()]:
                pending.remove(p)
                p.join()
                if p.exitcode != 0:
                    how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"exit code {p.exitcode}"
                    errors.append(f"{p.name} (pid {p.pid}) ended with {how}")
                    if reap_dead_trials(study, max_retry):
                        close_failed_trial_runs(client, parent_run_id, study)
            show(study)
    except BaseException:
        for p in pending:
            p.terminate()
        for p in pending:
            p.join()
        raise
    return errors
