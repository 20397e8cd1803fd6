"""Evaluate forecasts against observed outcomes, the baselines and the oracle; write a report.

:func:`evaluate` is the one entry point (the CLI ``progression evaluate`` calls it)::

    results = evaluate("predictions.csv", "cohort/", out_dir="report/")

It writes atomically into ``out_dir``: ``metrics.json`` (every metric of every method with
its bootstrap CI, the cohort description, the survival analysis, the settings),
``metrics.csv`` (the same metrics, one row each), ``subgroups.csv`` (every metric by
subgroup; with ``leave_one_site_out``, ``leave_one_site_out.csv`` per left-out site),
``report.html`` (TRIPOD-style, readable
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
from progression.data.features import features_at
from progression.data.outcomes import OutcomeRule, scored_rows
from progression.errors import ProgressionError
from progression.evaluate.baselines import DEFAULT_BASELINES
from progression.evaluate.forecasts import (
    CROSS_FIT_FOLDS,
    baseline_forecasts,
    evaluation_cohorts,
    matched_outcomes,
    model_forecasts,
)
from progression.evaluate.inputs import (
    as_index_dates,
    horizon_label,
)
from progression.evaluate.subgroup_report import (
    GroupPlan,
    SiteInputs,
    group_sections,
    html_tables,
    plan_groups,
    write_section_tables,
)
from progression.evaluate.survival import cox_models, km_by_tertile, survival_frame
from progression.evaluate.tracking import log_to_mlflow, mlflow_name
from progression.io import atomic_write_bytes, atomic_write_csv, atomic_write_text, json_safe
from progression.metrics import (
    DELTA_METRICS,
    INDEX_METRICS,
    SURVIVAL_METRICS,
    Metric,
    bootstrap_counts,
    compute,
)
from progression.scoring import is_rapid

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"


# --------------------------------------------------------------------------- metrics
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
    groups: GroupPlan,
    horizons: Sequence[float],
    model_name: str | None,
    n_boot: int,
    seed: int,
    progress: bool,
) -> tuple[pd.DataFrame, dict[tuple[str, float], pd.DataFrame], dict[str, Any]]:
    """Every metric of every method (tidy frame), the joined rows used for the figures, and
    the subgroup (and site) sections."""
    index_scores = groups.index_scores
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
            frame = scored_rows(predictions, outcomes, h, groups.rapid_rate)
            joined[(method, h)] = frame
            rows += _metric_rows(method, h, run(DELTA_METRICS, frame))
        if method == model_name:  # baselines copy the given score: nothing to measure
            first = predictions.sort_values("horizon_years").drop_duplicates("patient_id")
            frame = first[["patient_id", "svdh_index_pred"]].merge(index_scores, on="patient_id")
            rows += _metric_rows(method, None, run(INDEX_METRICS, frame))
        frame = survival_frame(predictions, outcomes)
        if not frame.empty:
            rows += _metric_rows(method, None, run(SURVIVAL_METRICS, frame))
    sections = group_sections(groups, methods, model_name, outcomes, horizons, n_boot, seed)
    return pd.DataFrame(rows), joined, sections


# --------------------------------------------------------------------------- description
def describe_cohort(cohort: Cohort, outcomes: pd.DataFrame, horizons: Sequence[float],
                    rapid_rate: float | None = None) -> dict[str, Any]:
    """Who was evaluated: counts, history, covariates at the index, outcomes (TRIPOD item 13).

    Changes are in the cohort's score units (``scoring``); ``rapid_rate`` defaults to its
    system's."""
    rapid_rate = cohort.system.rapid_rate if rapid_rate is None else rapid_rate
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
            "fraction_rapid": float(np.mean(is_rapid(delta.to_numpy(), h, rapid_rate)))
                              if delta.size else None,
        }
    events = outcomes.drop_duplicates("patient_id").dropna(subset=["event"])
    return {
        "root": str(cohort.root) if cohort.root else None,
        "scoring": cohort.scoring,
        "scoring_label": cohort.system.label,
        "unit": cohort.system.unit,
        "rapid_rate": rapid_rate,
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


METHOD_DESCRIPTIONS = {
    "cohort_mean": "Everybody progresses at the training cohort's mean annual rate.",
    "linear": "The patient's own past SvdH slope (least squares over scored visits), "
              "continued; cohort mean rate with fewer than two scored visits.",
    "clinical_matrix": "ASPIRE rapid-progression matrix (Vastesaeger et al., Rheumatology 2009): "
                       "SJC28, CRP (or ESR) and RF categories, risk re-calibrated on the "
                       "training cohort.",
    "covariates": "Gradient boosting on static and last-visit covariates and past scores "
                  "(no images), tuned on the training cohort: 4 seeded settings scored by "
                  "3-fold patient-grouped cross-validation, the same budget rule for every "
                  "learned baseline.",
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
    subgroups: Sequence[str] = (), leave_one_site_out: bool = False, site_column: str = "site",
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
        Horizons (years) and events (default: 1, 2 years; rapid at the cohort's system's rate).
    n_boot, seed, progress
        Patient-bootstrap resamples for the 95% CIs, their seed; show tqdm progress bars.
    model_name
        Name of ``source`` in tables and figures; its metrics log as ``test/<metric>``.
    tracking_uri, experiment, run_name, share_identifiers
        Log metrics and the report to MLflow when ``tracking_uri`` is given; per-patient
        tables and absolute paths only with ``share_identifiers`` (docs/mlflow.md, Privacy).
    subgroups, leave_one_site_out, site_column
        Subgroups and sites: see :func:`progression.evaluate.subgroup_report.plan_groups`.

    Returns the content of ``metrics.json`` plus ``out_dir`` and, when logged, ``mlflow_run_id``.
    """
    rule, horizons, out_dir = _checked(rule, n_boot, out_dir)
    tables, train = evaluation_cohorts(source, cohort, train_cohort, tracking_uri)
    rule = rule.for_system(tables.system)  # rapid rate and SDC in the cohort's units
    outcomes = matched_outcomes(outcomes, tables, rule)
    index_dates = as_index_dates(outcomes, tables)
    groups = plan_groups(tables, outcomes, subgroups, leave_one_site_out and SiteInputs(
        source, tables, train, index_dates, site_column, tracking_uri), rule.rapid_rate)  # checked: fail early
    methods = {} if source is None else {model_name: model_forecasts(
        source, tables, outcomes, horizons, model_name, progress, tracking_uri)}
    skipped = baseline_forecasts(methods, baselines, tables, train, outcomes, index_dates,
                                  horizons, seed, progress)
    model_key = model_name if source is not None else None
    table, joined, sections = _compute_all(methods, outcomes, groups, horizons, model_key,
                                           n_boot, seed, progress)
    survival = _survival_analysis(methods, model_key, outcomes, tables, index_dates)
    files = _write_figures_and_tables(out_dir, methods, joined, outcomes, horizons, survival)
    settings = _settings(rule, horizons, n_boot, seed, train)
    results = _results(settings, model_key, methods, skipped, tables, outcomes, horizons, table,
                       survival, files, sections, rule.rapid_rate)
    results = _write_report(out_dir, results, table, model_key, horizons, sections)
    if tracking_uri:
        params = {**settings, "cohort": results["cohort"]["root"], "model": model_key}
        results["mlflow_run_id"] = log_to_mlflow(table, out_dir, model_key, tracking_uri, experiment,
                                                 run_name, params, source, tables, share_identifiers)
    return results


def _checked(rule: OutcomeRule | None, n_boot: int, out_dir: str | Path
             ) -> tuple[OutcomeRule, tuple[float, ...], Path]:
    """The rule (default: 1 and 2 years, rapid progression), its horizons, the report path."""
    if n_boot < 1:
        raise ProgressionError(f"--bootstrap must be >= 1 resample, got {n_boot}")
    rule = rule or OutcomeRule()
    return rule, tuple(float(h) for h in rule.horizons), Path(out_dir)


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
             files: dict[str, str], sections: dict[str, tuple[dict, pd.DataFrame]],
             rapid_rate: float) -> dict[str, Any]:
    """The content of ``metrics.json``."""
    degraded = {m: int((p["note"].fillna("") != "").sum() // max(len(horizons), 1))
                for m, p in methods.items()}
    return json_safe({
        "settings": settings,
        "model": model_key,
        "methods": list(methods),
        "skipped": skipped,
        "degraded_forecasts": degraded,
        "cohort": describe_cohort(tables, outcomes, horizons, rapid_rate),
        "metrics": _nested_metrics(table),
        "survival": {"method": survival.method,
                     "kaplan_meier": survival.km.as_dict() if survival.km else None,
                     "cox": survival.cox},
        "files": {**files, "metrics_json": "metrics.json", "metrics_csv": "metrics.csv",
                  "report": "report.html", **{name: f"{name}.csv" for name in sections}},
        **{name: section for name, (section, _) in sections.items()},
    })


def _write_report(out_dir: Path, results: dict[str, Any], table: pd.DataFrame,
                  model_key: str | None, horizons: tuple[float, ...],
                  sections: dict[str, tuple[dict, pd.DataFrame]]) -> dict[str, Any]:
    """``metrics.csv``, ``metrics.json``, the section tables and ``report.html`` in
    ``out_dir``; returns ``results`` with ``out_dir``."""
    write_section_tables(out_dir, sections)
    tidy = table.assign(name=[mlflow_name(r, model_key) for r in table.itertuples(index=False)])
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
        "group_tables": {name: html_tables(rows, horizons)
                         for name, (_, rows) in sections.items()},
    }))
    return {**results, "out_dir": str(out_dir)}
