"""Evaluate forecasts against observed outcomes, the baselines and the oracle; write a report.

:func:`evaluate` is the one entry point (the CLI ``progression evaluate`` calls it)::

    results = evaluate("predictions.csv", "cohort/", out_dir="report/")

It writes atomically into ``out_dir``: ``metrics.json`` (every metric of every method with
its bootstrap CI, the cohort description, the survival analysis, the settings),
``metrics.csv`` (the same metrics, one row each), ``report.html`` (TRIPOD-style, readable
offline, figures referenced by relative path), the PNG figures, ``outcomes.csv`` (the
outcomes used) and ``predictions/<method>.csv`` for the model and every baseline (a selector for
``progression enrich``). With a tracking URI the metrics (``test/mae_delta_1y``, ...; a
baseline's as ``test/<baseline>/mae_delta_1y``) and the whole directory are logged to an
MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader
from tqdm.auto import tqdm

import progression.evaluate.figures as figures
from progression.cohort import Cohort
from progression.columns import DAYS_PER_YEAR
from progression.data.outcomes import OutcomeRule
from progression.errors import ProgressionError, TrackingError
from progression.evaluate.baselines import (
    DEFAULT_BASELINES,
    features_at,
)
from progression.evaluate.forecasts import (
    CROSS_FIT_FOLDS,
    baseline_forecasts,
    checkpoint_data,
    evaluation_cohorts,
    is_checkpoint,
    matched_outcomes,
    model_forecasts,
)
from progression.evaluate.inputs import (
    as_index_dates,
    horizon_label,
)
from progression.evaluate.metrics import (
    DELTA_METRICS,
    INDEX_METRICS,
    SURVIVAL_METRICS,
    Metric,
    bootstrap_counts,
    compute,
)
from progression.evaluate.survival import cox_models, km_by_tertile, survival_frame
from progression.io import atomic_write_bytes, atomic_write_csv, atomic_write_text, json_safe
from progression.scoring import is_rapid

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"


# --------------------------------------------------------------------------- metrics
def _index_scores(cohort: Cohort, outcomes: pd.DataFrame) -> pd.DataFrame:
    """The given (read) SvdH total at each patient's index visit, for the scoring metrics."""
    index = outcomes[["patient_id", "index_date"]].drop_duplicates("patient_id")
    reads = cohort.visits[["patient_id", "visit_date", "svdh_total"]].rename(
        columns={"visit_date": "index_date", "svdh_total": "svdh_index_obs"}
    )
    return index.merge(reads, on=["patient_id", "index_date"], how="left")[
        ["patient_id", "svdh_index_obs"]
    ]


def _scored_rows(predictions: pd.DataFrame, outcomes: pd.DataFrame, h: float) -> pd.DataFrame:
    """Predictions joined with outcomes for horizon ``h``, with the 0/1 rapid outcome."""
    pred = predictions[np.isclose(predictions["horizon_years"], h)]
    obs = outcomes[np.isclose(outcomes["horizon_years"], h)][["patient_id", "delta_svdh_obs"]]
    rows = obs.merge(pred.drop(columns=["index_date", "horizon_years"]), on="patient_id",
                     how="left")
    delta = rows["delta_svdh_obs"].to_numpy(float)
    rows["rapid_obs"] = np.where(np.isfinite(delta), is_rapid(np.nan_to_num(delta), h), np.nan)
    return rows


def _metric_rows(method: str, horizon: float | None, estimates: dict) -> list[dict[str, Any]]:
    rows = []
    for name, est in estimates.items():
        suffix = f"_{horizon_label(horizon)}" if horizon is not None else ""
        rows.append({
            "method": method,
            "horizon_years": horizon,
            "metric": name,
            "value": est.value,
            "ci_lo": est.lo,
            "ci_hi": est.hi,
            "n": est.n,
            "mlflow_name": f"{name}{suffix}",
        })
    return rows


def _compute_all(
    methods: dict[str, pd.DataFrame],
    outcomes: pd.DataFrame,
    index_scores: pd.DataFrame,
    horizons: Sequence[float],
    model_name: str | None,
    n_boot: int,
    seed: int,
    progress: bool,
) -> tuple[pd.DataFrame, dict[tuple[str, float], pd.DataFrame]]:
    """Every metric of every method (tidy frame) and the joined rows used for the figures."""
    patients = np.array(sorted(outcomes["patient_id"].unique()))
    position = {pid: i for i, pid in enumerate(patients)}
    counts = bootstrap_counts(len(patients), n_boot, seed)

    def run(metrics: Sequence[Metric], frame: pd.DataFrame) -> dict:
        index = frame["patient_id"].map(position).to_numpy(int)
        return compute(metrics, frame, counts, index)

    rows: list[dict[str, Any]] = []
    joined: dict[tuple[str, float], pd.DataFrame] = {}
    for method, predictions in tqdm(methods.items(), desc="metrics", disable=not progress):
        for h in horizons:
            frame = _scored_rows(predictions, outcomes, h)
            joined[(method, h)] = frame
            rows += _metric_rows(method, h, run(DELTA_METRICS, frame))
        if method == model_name:  # baselines copy the given score: nothing to measure
            first = predictions.sort_values("horizon_years").drop_duplicates("patient_id")
            frame = first[["patient_id", "svdh_index_pred"]].merge(index_scores, on="patient_id")
            rows += _metric_rows(method, None, run(INDEX_METRICS, frame))
        frame = survival_frame(predictions, outcomes)
        if not frame.empty:
            rows += _metric_rows(method, None, run(SURVIVAL_METRICS, frame))
    return pd.DataFrame(rows), joined


# --------------------------------------------------------------------------- description
def describe_cohort(cohort: Cohort, outcomes: pd.DataFrame,
                    horizons: Sequence[float]) -> dict[str, Any]:
    """Who was evaluated: counts, history, covariates at the index, outcomes (TRIPOD item 13)."""
    ids = outcomes["patient_id"].unique()
    visits = cohort.visits[cohort.visits["patient_id"].isin(ids)]
    index = outcomes.drop_duplicates("patient_id").set_index("patient_id")["index_date"]
    before = visits[visits["visit_date"] <= visits["patient_id"].map(index)]
    per_patient = before.groupby("patient_id")
    span = (per_patient["visit_date"].max() - per_patient["visit_date"].min()).dt.days / DAYS_PER_YEAR
    at = pd.DataFrame({"patient_id": index.index, "date": index.to_numpy()})
    features = features_at(cohort, at)
    covariates = {}
    for column in features.columns:
        if column in ("patient_id", "date"):
            continue
        values = features[column]
        numeric = pd.to_numeric(values, errors="coerce")
        missing = float(values.isna().mean())
        if numeric.notna().sum() and numeric.notna().sum() == values.notna().sum():
            covariates[column] = {"kind": "numeric", "mean": float(numeric.mean()),
                                  "sd": float(numeric.std()), "median": float(numeric.median()),
                                  "missing": missing}
        else:
            covariates[column] = {"kind": "categorical", "missing": missing,
                                  "levels": values.astype(str).value_counts().to_dict()}
    outcome_summary = {}
    for h in horizons:
        delta = outcomes.loc[np.isclose(outcomes["horizon_years"], h), "delta_svdh_obs"].dropna()
        outcome_summary[horizon_label(h)] = {
            "n_observed": int(delta.size),
            "mean_change": float(delta.mean()) if delta.size else None,
            "sd_change": float(delta.std()) if delta.size > 1 else None,
            "fraction_rapid": float(np.mean(is_rapid(delta.to_numpy(), h))) if delta.size else None,
        }
    events = outcomes.drop_duplicates("patient_id").dropna(subset=["event"])
    return {
        "root": str(cohort.root) if cohort.root else None,
        "simulated": cohort.truth_dir is not None,
        "n_patients": int(len(ids)),
        "n_visits_before_index": int(len(before)),
        "median_visits_per_patient": float(per_patient.size().median()) if len(before) else 0.0,
        "median_history_years": float(span.median()) if len(span) else 0.0,
        "n_imaged_visits": int(cohort.images[cohort.images["patient_id"].isin(ids)][
            ["patient_id", "visit_date"]].drop_duplicates().shape[0]),
        "covariates_at_index": covariates,
        "outcomes": outcome_summary,
        "survival": {
            "n": int(len(events)),
            "events": int(events["event"].sum()) if len(events) else 0,
            "median_followup_years": (float(events["time_to_event_years"].median())
                                      if len(events) else None),
        },
    }


# --------------------------------------------------------------------------- output
def _nested_metrics(table: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in table.itertuples(index=False):
        method = out.setdefault(row.method, {"horizons": {}, "overall": {}})
        where = (method["overall"] if pd.isna(row.horizon_years)
                 else method["horizons"].setdefault(horizon_label(row.horizon_years), {}))
        where[row.metric] = {"value": row.value, "ci_lo": row.ci_lo, "ci_hi": row.ci_hi,
                             "n": row.n}
    return out


def _mlflow_name(row: Any, model_name: str | None) -> str:
    prefix = "test/" if row.method == model_name else f"test/{row.method}/"
    return prefix + row.mlflow_name


def log_to_mlflow(table: pd.DataFrame, out_dir: Path, model_name: str | None, tracking_uri: str,
                  experiment: str, run_name: str, params: dict[str, Any],
                  source: Any, cohort: Cohort, share_identifiers: bool = False) -> str:
    """Log every finite metric (and its CI bounds), the evaluated cohort (an MLflow dataset,
    context ``evaluation``), the tags (:func:`_run_tags`: the scored checkpoint's training run)
    and the report directory with the one run writer
    (:mod:`progression.tracking.runs`); returns the run id. The per-patient tables
    (``predictions/``, ``outcomes.csv``) stay in the local report unless
    ``share_identifiers``."""
    import mlflow
    from mlflow import MlflowClient

    from progression import tracking

    metrics: dict[str, float] = {}
    for row in table.itertuples(index=False):
        name = _mlflow_name(row, model_name)
        for key, suffix in (("value", ""), ("ci_lo", "_ci_lo"), ("ci_hi", "_ci_hi")):
            value = getattr(row, key)
            if value is not None and np.isfinite(value):
                metrics[name + suffix] = float(value)
    try:
        client = MlflowClient(tracking_uri)
        tags = _run_tags(source, cohort, tracking_uri, share_identifiers)
        run_id = tracking.create_run(client, experiment, name=run_name, tags=tags)
        tracking.log_params(client, run_id, params, share_identifiers)
        tracking.log_metrics(client, run_id, metrics)
        tracking.log_cohorts(client, run_id, [
            tracking.cohort_input(cohort, "evaluation", share_identifiers=share_identifiers)])
        tracking.log_report(client, run_id, out_dir, "evaluation", PER_PATIENT_FILES,
                            share_identifiers)
        client.set_terminated(run_id)
        return run_id
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(
            f"could not log the evaluation to MLflow at '{tracking_uri}': {exc}; check the "
            "tracking URI (e.g. sqlite:///mlruns.db) or leave --tracking-uri out"
        ) from None


PER_PATIENT_FILES = ("predictions", "outcomes.csv")  # report entries naming patients


def _run_tags(source: Any, tables: Cohort, tracking_uri: str | None,
              share_identifiers: bool) -> dict[str, str]:
    """The evaluate run's tags: the common ones, and the training run (and registered model
    version) of a checkpoint it scored."""
    from progression import tracking

    source_run = model_version = None
    if is_checkpoint(source):
        source_run = checkpoint_data(source, tracking_uri).meta.run_id
        text = str(source)
        if text.startswith("models:/"):
            model_version = text[len("models:/"):]
    return tracking.run_tags("evaluate", tables, source_run=source_run,
                             model_version=model_version, share_identifiers=share_identifiers)


METHOD_DESCRIPTIONS = {
    "cohort_mean": "Everybody progresses at the training cohort's mean annual rate.",
    "linear": "The patient's own past SvdH slope (least squares over scored visits), "
              "continued; cohort mean rate with fewer than two scored visits.",
    "clinical_matrix": "ASPIRE rapid-progression matrix (Vastesaeger et al., Rheumatology 2009): "
                       "SJC28, CRP (or ESR) and RF categories, risk re-calibrated on the "
                       "training cohort.",
    "covariates": "Gradient boosting on static and last-visit covariates and past scores "
                  "(no images).",
    "oracle": "The simulator's oracle: the best possible forecast from the latent truth "
              "(simulated cohorts only).",
}


def _render_html(context: dict[str, Any]) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)

    def fmt(value: Any, digits: int = 2) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "–"
        return f"{value:.{digits}f}"

    env.filters["fmt"] = fmt
    return env.get_template("report.html.j2").render(**context)


# --------------------------------------------------------------------------- entry point
def evaluate(
    source: pd.DataFrame | str | Path | None,
    cohort: Any,
    outcomes: pd.DataFrame | str | Path | None = None,
    baselines: Sequence[str] | None = DEFAULT_BASELINES,
    out_dir: str | Path = "evaluation",
    *,
    train_cohort: Any = None,
    rule: OutcomeRule | None = None,
    n_boot: int = 1000, seed: int = 0,
    model_name: str = "model",
    tracking_uri: str | None = None,
    experiment: str = "progression",
    run_name: str = "evaluate",
    progress: bool = True, share_identifiers: bool = False,
) -> dict[str, Any]:
    """Score a model's forecasts and the baselines on one cohort; write the report.

    Parameters
    ----------
    source
        The model's predictions: a DataFrame, a predictions CSV (``*.csv``), or a checkpoint
        file, which is run through ``progression.predict.predict_cohort`` from the outcomes'
        index dates. ``None`` evaluates the baselines only.
    cohort
        The evaluation cohort (directory in format v1 or ``Cohort``).
    outcomes
        Outcomes table (DataFrame or CSV, docs/evaluation.md); ``None`` derives it from the
        cohort (simulator truth, else the landmark split) with ``rule``.
    baselines
        Names from ``progression.evaluate.baselines.BASELINES``; the oracle is skipped on
        cohorts without truth, a baseline whose inputs are missing is skipped with a warning.
    out_dir
        Report directory (created; files replaced atomically).
    train_cohort
        Cohort to fit the baselines on. ``None``: the training split recorded in the
        checkpoint when ``source`` is one and its cohort is still readable; otherwise 5-fold
        cross-fitting on ``cohort`` by patient, so no patient's own outcome trains its
        baseline forecast. When ``cohort`` is the checkpoint's own training cohort (same
        fingerprint), only its recorded test split is evaluated.
    rule
        Horizons (years) and the progression-event definition (default: 1 and 2 years, rapid
        progression >= 5 SvdH units/yr).
    n_boot, seed, progress
        Patient-bootstrap resamples for the 95% CIs, their seed; show tqdm progress bars.
    model_name
        Name of ``source`` in tables and figures; its metrics log as ``test/<metric>``.
    tracking_uri, experiment, run_name, share_identifiers
        Log metrics and the report to MLflow when ``tracking_uri`` is given; per-patient
        tables and absolute paths only with ``share_identifiers`` (docs/mlflow.md, Privacy).

    Returns the content of ``metrics.json`` plus ``out_dir`` and, when logged, ``mlflow_run_id``.
    """
    rule = rule or OutcomeRule()
    horizons = tuple(float(h) for h in rule.horizons)
    if n_boot < 1:
        raise ProgressionError(f"--bootstrap must be >= 1 resample, got {n_boot}")
    out_dir = Path(out_dir)
    tables, train = evaluation_cohorts(source, cohort, train_cohort, tracking_uri)
    outcomes = matched_outcomes(outcomes, tables, rule)
    index_dates = as_index_dates(outcomes, tables)
    methods = {} if source is None else {model_name: model_forecasts(
        source, tables, outcomes, horizons, model_name, progress, tracking_uri)}
    skipped = baseline_forecasts(methods, baselines, tables, train, outcomes, index_dates,
                                  horizons, seed, progress)
    model_key = model_name if source is not None else None
    table, joined = _compute_all(methods, outcomes, _index_scores(tables, outcomes), horizons,
                                 model_key, n_boot, seed, progress)
    survival = _survival_analysis(methods, model_key, outcomes, tables, index_dates)
    files = _write_figures_and_tables(out_dir, methods, joined, outcomes, horizons, survival)
    settings = _settings(rule, horizons, n_boot, seed, train)
    results = _results(settings, model_key, methods, skipped, tables, outcomes, horizons, table,
                       survival, files)
    _write_report(out_dir, results, table, model_key, horizons)
    results["out_dir"] = str(out_dir)
    if tracking_uri:
        params = {**settings, "cohort": results["cohort"]["root"], "model": model_key}
        results["mlflow_run_id"] = log_to_mlflow(table, out_dir, model_key, tracking_uri, experiment,
                                                 run_name, params, source, tables, share_identifiers)
    return results


@dataclass
class _Survival:
    method: str
    km: Any
    cox: dict[str, Any]


def _survival_analysis(methods: dict[str, pd.DataFrame], model_key: str | None,
                       outcomes: pd.DataFrame, tables: Cohort,
                       index_dates: pd.Series) -> _Survival:
    """Survival analysis of the model (without one: of the first method whose risk varies)."""
    method = model_key or next(
        (m for m, p in methods.items() if p["risk_score"].nunique() > 1), next(iter(methods))
    )
    frame = survival_frame(methods[method], outcomes)
    km = km_by_tertile(frame) if not frame.empty else None
    at = pd.DataFrame({"patient_id": index_dates.index, "date": index_dates.to_numpy()})
    clinical = features_at(tables, at).drop(columns="date")
    cox = cox_models(frame, clinical) if not frame.empty else {}
    return _Survival(method, km, cox)


def _write_figures_and_tables(out_dir: Path, methods: dict[str, pd.DataFrame],
                              joined: dict, outcomes: pd.DataFrame,
                              horizons: tuple[float, ...], survival: _Survival) -> dict[str, str]:
    """Figures, every method's predictions and the outcomes in ``out_dir``; returns the files."""
    files: dict[str, str] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for h in horizons:
        label = horizon_label(h)
        frames = {m: joined[(m, h)] for m in methods}
        files[f"calibration_{label}"] = f"calibration_{label}.png"
        atomic_write_bytes(out_dir / files[f"calibration_{label}"],
                           figures.calibration_figure(frames, label))
        files[f"scatter_{label}"] = f"scatter_{label}.png"
        atomic_write_bytes(out_dir / files[f"scatter_{label}"], figures.scatter_figure(frames, label))
    if survival.km is not None:
        files["km"] = "km.png"
        atomic_write_bytes(out_dir / "km.png", figures.km_figure(survival.km, survival.method))
    for name, predictions in methods.items():  # the model's too: a checkpoint's were made here
        path = f"predictions/{name}.csv"
        atomic_write_csv(out_dir / path, predictions.assign(
            index_date=predictions["index_date"].dt.strftime("%Y-%m-%d")))
        files[f"predictions_{name}"] = path
    atomic_write_csv(out_dir / "outcomes.csv", outcomes.assign(
        index_date=outcomes["index_date"].dt.strftime("%Y-%m-%d")))
    files["outcomes"] = "outcomes.csv"
    return files


def _settings(rule: OutcomeRule, horizons: tuple[float, ...], n_boot: int, seed: int,
              train: Cohort | None) -> dict[str, Any]:
    """How this evaluation was made, as ``metrics.json`` records it."""
    return {
        "horizons_years": list(horizons),
        "event_rule": rule.event,
        "sdc_units": rule.sdc_units,
        "landmark_tolerance_years": rule.tolerance_years,
        "observed_followup": rule.observed_followup,
        "bootstrap_resamples": n_boot,
        "seed": seed,
        "baselines_fitted_on": (f"{train.root} ({len(train.patient_ids)} patients)"
                                if train is not None
                                else f"{CROSS_FIT_FOLDS}-fold cross-fitting on the cohort"),
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _results(settings: dict[str, Any], model_key: str | None, methods: dict[str, pd.DataFrame],
             skipped: dict[str, str], tables: Cohort, outcomes: pd.DataFrame,
             horizons: tuple[float, ...], table: pd.DataFrame, survival: _Survival,
             files: dict[str, str]) -> dict[str, Any]:
    """The content of ``metrics.json``."""
    degraded = {m: int((p["note"].fillna("") != "").sum() // max(len(horizons), 1))
                for m, p in methods.items()}
    return json_safe({
        "settings": settings,
        "model": model_key,
        "methods": list(methods),
        "skipped": skipped,
        "degraded_forecasts": degraded,
        "cohort": describe_cohort(tables, outcomes, horizons),
        "metrics": _nested_metrics(table),
        "survival": {"method": survival.method,
                     "kaplan_meier": survival.km.as_dict() if survival.km else None,
                     "cox": survival.cox},
        "files": {**files, "metrics_json": "metrics.json", "metrics_csv": "metrics.csv",
                  "report": "report.html"},
    })


def _write_report(out_dir: Path, results: dict[str, Any], table: pd.DataFrame,
                  model_key: str | None, horizons: tuple[float, ...]) -> None:
    """``metrics.csv``, ``metrics.json`` and ``report.html`` in ``out_dir``."""
    tidy = table.assign(name=[_mlflow_name(r, model_key) for r in table.itertuples(index=False)])
    atomic_write_csv(out_dir / "metrics.csv", tidy.drop(columns="mlflow_name"))
    atomic_write_text(out_dir / "metrics.json", json.dumps(results, indent=2))
    metric_info = {m.name: m.description for m in (*DELTA_METRICS, *INDEX_METRICS,
                                                    *SURVIVAL_METRICS)}
    atomic_write_text(out_dir / "report.html", _render_html({
        "r": results,
        "horizons": [horizon_label(h) for h in horizons],
        "delta_metrics": [(m.name, m.description) for m in DELTA_METRICS],
        "overall_metrics": [(m.name, metric_info[m.name]) for m in (*INDEX_METRICS,
                                                                     *SURVIVAL_METRICS)],
        "descriptions": METHOD_DESCRIPTIONS,
    }))
