"""The MLflow side of a study: one parent run per study, one child run per trial.

Naming (see ``docs/mlflow.md``): the parent run is ``tune/<study>`` with tags
``progression.kind=study``, ``optuna.study_name``, ``optuna.storage`` (password stripped),
``optuna.metric`` and ``optuna.direction``, and the tags every run gets
(:func:`progression.tracking.run_tags`: command, commit, host); each trial's run (made by
:func:`progression.train.fit`) is ``tune/<study>/trial-NNN`` with ``mlflow.parentRunId``,
``progression.kind=trial``, ``optuna.trial_number`` and ``optuna.trial_state``
(COMPLETE, PRUNED or FAIL). When the study ends the parent gets the best value (under the
study's metric name), the best trial's number and run (tags ``best.trial_number``,
``best.run_id``), the best parameters (tags ``best.params.<key>``), the best config as
``best_config.yaml``, ``trials.csv`` and Optuna's plots under ``plots/``.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

from progression.config import Config, dump_config
from progression.io import atomic_open, atomic_write_csv, atomic_write_text
from progression.tracking import KIND_TAG, create_run, redact, run_tags
from progression.tuning.space import SearchSpace, apply_params

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"  # study user attribute
TAG_KIND = KIND_TAG  # progression.kind
TAG_STUDY = "optuna.study_name"
TAG_TRIAL = "optuna.trial_number"
TAG_STATE = "optuna.trial_state"


def parent_run_name(study_name: str) -> str:
    return f"tune/{study_name}"


def trial_run_name(study_name: str, number: int) -> str:
    return f"tune/{study_name}/trial-{number:03d}"


def trial_tags(study_name: str, number: int) -> dict[str, str]:
    """Tags a trial's run starts with (its final state is added when it ends)."""
    return {TAG_KIND: "trial", TAG_STUDY: study_name, TAG_TRIAL: str(number), TAG_STATE: "RUNNING"}


def open_parent_run(
    client: Any, experiment: str, study: Any, space: SearchSpace, storage_text: str
) -> str:
    """The study's parent run id: the one recorded on the study if it exists in this
    tracking store (a resumed study keeps its parent), else a new one. Marked RUNNING."""
    from mlflow.exceptions import MlflowException

    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            if client.get_run(run_id).info.lifecycle_stage == "active":
                client.update_run(run_id, status="RUNNING")
                return run_id
        except MlflowException:
            pass  # recorded in another tracking store, or deleted
    tags = {
        **run_tags("study"),
        TAG_STUDY: study.study_name,
        "optuna.storage": redact(storage_text),
        "optuna.metric": space.metric,
        "optuna.direction": space.direction,
    }
    run_id = create_run(client, experiment, name=parent_run_name(study.study_name), tags=tags)
    study.set_user_attr(PARENT_ATTR, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "search_space.yaml"
        atomic_write_text(path, space.source or "")
        client.log_artifact(run_id, str(path))
    return run_id


def child_runs(client: Any, parent_run_id: str) -> dict[int, list[Any]]:
    """The parent's trial runs, by trial number (a retried trial number has one run each try)."""
    runs = client.search_runs(
        [client.get_run(parent_run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=5000,
    )
    by_trial: dict[int, list[Any]] = {}
    for run in runs:
        number = run.data.tags.get(TAG_TRIAL)
        if number is not None:
            by_trial.setdefault(int(number), []).append(run)
    return by_trial


def close_failed_trial_runs(client: Any, parent_run_id: str, study: Any) -> int:
    """Mark the runs of FAIL trials still shown as RUNNING (their worker died) as KILLED.

    Returns how many runs were closed.
    """
    from optuna.trial import TrialState

    failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    closed = 0
    for number, runs in child_runs(client, parent_run_id).items():
        for run in runs:
            if number in failed and run.info.status == "RUNNING":
                client.set_tag(run.info.run_id, TAG_STATE, "FAIL")
                client.set_terminated(run.info.run_id, status="KILLED")
                closed += 1
    return closed


def _save_plots(study: Any, out_dir: Path) -> list[Path]:
    """Optuna's matplotlib plots as PNG (plotly is optional and not needed)."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    plots = {
        "optimization_history": ovm.plot_optimization_history,
        "param_importances": ovm.plot_param_importances,
        "parallel_coordinate": ovm.plot_parallel_coordinate,
    }
    written = []
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = plot(study)
        except Exception as exc:  # e.g. importances need two finished trials with varied params
            log.warning("skipped the %s plot: %s", name, exc)
            continue
        figure = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        path = out_dir / f"{name}.png"
        with atomic_open(path, "wb") as handle:
            figure.savefig(handle, format="png", dpi=120, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def best_config(base: Config, space: SearchSpace, params: dict[str, Any]) -> Config:
    """The config of a trial: base config, then the space's ``fixed`` values, then ``params``."""
    return apply_params(apply_params(base, space.fixed), params)


def finalize_parent(
    client: Any,
    parent_run_id: str,
    study: Any,
    space: SearchSpace,
    base: Config,
    out_dir: Path,
    status: str = "FINISHED",
) -> Path | None:
    """Log the study's outcome on its parent run and end it with ``status``.

    Writes ``best_config.yaml`` (usable with ``progression train --config``) and
    ``trials.csv`` under ``out_dir`` and logs both; returns the best config path, or None
    when no trial completed.
    """
    from optuna.trial import TrialState

    close_failed_trial_runs(client, parent_run_id, study)
    counts = {s: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        client.log_metric(parent_run_id, f"trials/{state.name.lower()}", counts[state])
    out_dir.mkdir(parents=True, exist_ok=True)
    if study.trials:
        atomic_write_csv(out_dir / "trials.csv", study.trials_dataframe())
        client.log_artifact(parent_run_id, str(out_dir / "trials.csv"))
    best_path = None
    if counts[TrialState.COMPLETE]:
        best = study.best_trial
        client.log_metric(parent_run_id, space.metric, best.value, step=best.number)
        client.set_tag(parent_run_id, "best.trial_number", str(best.number))
        if "mlflow_run_id" in best.user_attrs:
            client.set_tag(parent_run_id, "best.run_id", best.user_attrs["mlflow_run_id"])
        for key, value in best.params.items():
            client.set_tag(parent_run_id, f"best.params.{key}", str(value))
        best_path = out_dir / "best_config.yaml"
        dump_config(best_config(base, space, best.params), best_path)
        client.log_artifact(parent_run_id, str(best_path))
        plot_dir = out_dir / "plots"
        for path in _save_plots(study, plot_dir):
            client.log_artifact(parent_run_id, str(path), artifact_path="plots")
    client.set_terminated(parent_run_id, status=status)
    return best_path
