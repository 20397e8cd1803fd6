"""The whole enrichment analysis: select, size, compare selectors, validate on outcomes.

:func:`run_enrichment` is what ``progression enrich`` calls; it returns an
:class:`EnrichmentResult` that :mod:`progression.enrich.report` writes to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from progression.enrich.outcomes import Outcomes
from progression.enrich.plan import (
    EnrichmentPlan,
    TrialDesign,
    outcome_frame,
    plan_selector,
    strictness_curve,
)
from progression.enrich.sample_size import ArmSizes
from progression.enrich.selection import (
    SelectionRule,
    at_horizon,
    check_predictions,
    select,
)
from progression.enrich.trial import (
    SimulatedPower,
    SurvivalComparison,
    compare_time_to_rapid,
    realised_progression,
    simulate_power,
)
from progression.errors import ProgressionError

MODEL, MATRIX, NONE = "model", "clinical_matrix", "none"
LABELS = {MODEL: "model", MATRIX: "clinical matrix", NONE: "no enrichment"}
CURVE_FRACTIONS = np.round(np.arange(0.05, 1.0001, 0.05), 2)


@dataclass
class Validation:
    """What the outcomes say about each selector (keyed by selector name).

    ``needed``: patients to enrol per endpoint had the realised outcomes of the selected
    patients been known (the same sizing, fed the outcomes instead of the forecasts):
    the fair way to compare selectors whose forecasts are calibrated differently.
    ``needed_curves``: the same per enrolled fraction (columns of
    :func:`~progression.enrich.plan.strictness_curve`).
    """

    outcome: str
    deltas: pd.DataFrame  # patient_id, delta: realised change of the screened patients
    realised: dict[str, pd.DataFrame] = field(default_factory=dict)
    survival: dict[str, SurvivalComparison] = field(default_factory=dict)
    power: dict[str, dict[str, SimulatedPower]] = field(default_factory=dict)
    needed: dict[str, dict[str, ArmSizes | None]] = field(default_factory=dict)
    needed_curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    n_sim: int = 0
    seed: int = 0


@dataclass
class EnrichmentResult:
    """Everything the report shows."""

    plan: EnrichmentPlan
    selected: pd.DataFrame  # the model's selected patients, ranked
    forecasts: dict[str, pd.DataFrame]  # selector -> one horizon's forecasts (all screened)
    selected_ids: dict[str, set[str]]
    curves: dict[str, pd.DataFrame]
    validation: Validation | None = None


def align_matrix(model: pd.DataFrame, matrix: pd.DataFrame, source: str) -> pd.DataFrame:
    """The matrix forecasts of exactly the model's screened patients (error if any lack one)."""
    missing = sorted(set(model["patient_id"]) - set(matrix["patient_id"]))
    if missing:
        raise ProgressionError(
            f"{source}: no clinical-matrix forecast for {len(missing)} of the "
            f"{len(model)} screened patients (e.g. {', '.join(missing[:3])}); predict the "
            "matrix on the same cohort as the model"
        )
    return matrix[matrix["patient_id"].isin(set(model["patient_id"]))].reset_index(drop=True)


def predict_matrix(train_cohort: Any, cohort: Any, horizon: float,
                   index_dates: pd.DataFrame) -> pd.DataFrame:
    """Fit the clinical matrix model on ``train_cohort`` and forecast ``cohort``.

    Cohorts are directories (read without their radiographs, which the matrix never
    looks at, so table-only simulated cohorts work too) or :class:`~progression.cohort.Cohort`
    objects.
    ``index_dates`` (patient_id, index_date), e.g. the model's predictions table, make
    the matrix forecast from the same visit as the model.
    """
    from progression.evaluate.baselines import ClinicalMatrix
    from progression.evaluate.inputs import read_tables

    def tables(c: Any) -> Any:
        return read_tables(c) if isinstance(c, str | Path) else c

    frame = ClinicalMatrix().fit(tables(train_cohort)).predict(
        tables(cohort), (horizon,), index_dates=index_dates)
    return check_predictions(frame, f"clinical matrix fitted on {train_cohort}")


def needed_sizes(pool: np.ndarray, design: TrialDesign) -> dict[str, ArmSizes | None]:
    """Patients to enrol per endpoint if the forecasts had been the realised changes ``pool``
    (SvdH units): each patient's forecast is its outcome, with no spread."""
    if len(pool) < 2:
        return {"mean_change": None, "rapid": None}
    plan = plan_selector("", outcome_frame(pool, design), len(pool), design, reference=pool)
    return {"mean_change": plan.mean.enrolled, "rapid": plan.rapid.enrolled}


def _needed_by_endpoint(chosen: pd.DataFrame, deltas: pd.DataFrame,
                        design: TrialDesign) -> dict[str, ArmSizes | None]:
    pool = deltas.loc[deltas["patient_id"].isin(set(chosen["patient_id"])), "delta"]
    needed = needed_sizes(pool.to_numpy(float), design)
    return {"mean": needed["mean_change"], "rapid": needed["rapid"]}


def reference_changes(predictions: pd.DataFrame, outcomes: Outcomes, rule: SelectionRule,
                      horizon: float, fraction: float, source: str) -> dict[str, np.ndarray]:
    """Reference outcomes to size from (``run_enrichment(reference=...)``): realised changes
    (SvdH units) of the patients the same rule enrols among other patients with outcomes
    (``model``), and of all of them (``none``).

    ``predictions``: the model's forecasts of the reference patients (e.g. its validation
    split); ``fraction``: the enrolled fraction of the screened cohort, used in place of an
    ``enrol`` count, which does not carry over to a cohort of another size.
    """
    frame = at_horizon(predictions, horizon, source)
    deltas = outcomes.deltas.drop_duplicates("patient_id").set_index("patient_id")["delta"]
    frame = frame[frame["patient_id"].isin(deltas.index)].reset_index(drop=True)
    if len(frame) < 2:
        raise ProgressionError(
            f"{source}: {len(frame)} of its patients have an outcome in '{outcomes.source}'; "
            "give the outcomes of the reference patients with --reference-outcomes"
        )
    same = rule if rule.enrol is None else SelectionRule(top_fraction=fraction)
    chosen = select(frame, same, source)
    return {MODEL: deltas.reindex(chosen["patient_id"]).to_numpy(float),
            NONE: deltas.reindex(frame["patient_id"]).to_numpy(float)}


def run_enrichment(
    predictions: pd.DataFrame,
    rule: SelectionRule,
    design: TrialDesign,
    *,
    matrix: pd.DataFrame | None = None,
    outcomes: Outcomes | None = None,
    n_sim: int = 1000,
    seed: int = 0,
    progress: bool = False,
    source: str = "predictions",
    matrix_source: str = "clinical-matrix predictions",
    reference: dict[str, np.ndarray] | None = None,
) -> EnrichmentResult:
    """Select with the model (and the matrix at the same enrolled fraction), size, validate.

    ``predictions`` / ``matrix``: checked predictions tables (all horizons);
    ``outcomes``: realised changes (and times to rapid progression) for validation;
    ``reference``: per selector (``model``, ``clinical_matrix``, ``none``), realised changes
    of the patients it selects in another cohort with outcomes, to size from instead of the
    forecasts (:func:`~progression.enrich.plan.plan_selector`).
    """
    if n_sim < 1:
        raise ProgressionError(f"--n-sim must be at least 1 (got {n_sim})")
    forecasts = {MODEL: at_horizon(predictions, design.horizon, source)}
    selected = {MODEL: select(forecasts[MODEL], rule, source)}
    n = len(forecasts[MODEL])
    if matrix is not None:
        forecasts[MATRIX] = align_matrix(
            forecasts[MODEL], at_horizon(matrix, design.horizon, matrix_source), matrix_source
        )
        # Same number enrolled as the model: the selectors differ in whom they pick, not how many.
        same = SelectionRule(enrol=len(selected[MODEL]))
        selected[MATRIX] = select(forecasts[MATRIX], same, matrix_source)
    forecasts[NONE] = forecasts[MODEL]
    selected[NONE] = forecasts[MODEL]

    plan = EnrichmentPlan(design=design, rule=rule.describe())
    for name, chosen in selected.items():
        plan.plans[name] = plan_selector(LABELS[name], chosen, n, design,
                                         (reference or {}).get(name))
    curves = {name: strictness_curve(forecasts[name], design, CURVE_FRACTIONS)
              for name in (MODEL, MATRIX) if name in forecasts}
    ids = {name: set(chosen["patient_id"]) for name, chosen in selected.items()}
    result = EnrichmentResult(plan, selected[MODEL], forecasts, ids, curves)
    if outcomes is not None:
        result.validation = validate(result, outcomes, n_sim, seed, progress)
    return result


def validate(result: EnrichmentResult, outcomes: Outcomes, n_sim: int, seed: int,
             progress: bool) -> Validation:
    """Realised progression, time to rapid progression and simulated trials per selector."""
    design = result.plan.design
    screened = set(result.forecasts[MODEL]["patient_id"])
    deltas = outcomes.deltas[outcomes.deltas["patient_id"].isin(screened)]
    if deltas.empty:
        raise ProgressionError(
            f"outcomes '{outcomes.source}': none of the {len(screened)} screened patients has "
            "an outcome; give the truth of the cohort the predictions were made on"
        )
    val = Validation(outcomes.outcome, deltas, n_sim=n_sim, seed=seed)
    times = None
    if outcomes.times is not None:
        times = outcomes.times[outcomes.times["patient_id"].isin(screened)]
    for i, (name, ids) in enumerate(result.selected_ids.items()):
        if name != NONE:
            val.realised[name] = realised_progression(deltas, ids, design.horizon)
            if times is not None and 0 < times["patient_id"].isin(ids).sum() < len(times):
                val.survival[name] = compare_time_to_rapid(times, ids)
        pool = deltas.loc[deltas["patient_id"].isin(ids), "delta"].to_numpy(float)
        sized = result.plan.plans[name]
        val.needed[name] = needed_sizes(pool, design)
        if name != NONE:
            val.needed_curves[name] = strictness_curve(
                result.forecasts[name], design, CURVE_FRACTIONS,
                sizes=lambda chosen: _needed_by_endpoint(chosen, deltas, design))
        val.power[name] = {}
        for j, sizing in enumerate((sized.mean, sized.rapid)):
            if sizing.enrolled is None or len(pool) < 2:
                continue
            val.power[name][sizing.endpoint] = simulate_power(
                pool, sizing, design, n_sim, seed=seed + 100 * i + j, progress=progress,
                label=f"{LABELS[name]}, {sizing.endpoint}",
            )
    return val

