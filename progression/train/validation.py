"""The model card's subgroup table: validation forecasts against the patients' own later scores.

After a fit, the validation patients (never trained on) are forecast from a scored, imaged
index visit with the final, calibrated checkpoint, exactly as a user would predict, and scored
against their landmark outcomes (a scored visit 1 or 2 years +- 0.25 later,
:func:`progression.data.outcomes.landmark_outcomes`): the same outcomes the interval is
calibrated on, predicted again here because calibration predicts the raw interval and the card
reports the interval a user gets. The table reads every subgroup of
:data:`progression.subgroups.DEFAULT_SUBGROUPS` the cohort has, with the too-small rule of
:mod:`progression.subgroups` (fewer than 30 patients: no estimate). These patients also chose
the epoch (and calibrated the interval), so the values are optimistic; ``progression evaluate``
on held-out patients gives the unbiased table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from progression.cohort import Cohort
from progression.data.features import features_at
from progression.data.outcomes import (
    NoObservedOutcomes,
    OutcomeRule,
    landmark_outcomes,
    scored_rows,
)
from progression.metrics import DELTA_METRICS
from progression.predict import predict_cohort
from progression.subgroups import DEFAULT_SUBGROUPS, subgroup_metrics

# the card's columns: metric -> header (evaluate's metrics.json holds every metric)
CARD_METRICS = {"mae_delta": "MAE of change", "bias_delta": "bias of change",
                "coverage_delta": "interval coverage", "auroc_rapid": "AUROC rapid"}


def validation_subgroups(
    checkpoint: str | Path,
    cohort: Cohort,
    patient_ids: Sequence[str],
    horizons: Sequence[float] = (1.0, 2.0),
    cache_dir: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame | None:
    """The card's subgroup table of ``patient_ids`` (see module docstring); None when none
    of them has a landmark outcome."""
    if not patient_ids:
        return None
    held_out = cohort.subset(patient_ids)
    rule = OutcomeRule(horizons=tuple(float(h) for h in horizons)).for_system(held_out.system)
    try:
        outcomes = landmark_outcomes(held_out, rule).dropna(subset=["delta_svdh_obs"])
    except NoObservedOutcomes:  # a pilot cohort: the card says the table is missing
        return None
    if outcomes.empty:
        return None
    index = outcomes.drop_duplicates("patient_id")[["patient_id", "index_date"]]
    predictions = predict_cohort(checkpoint, held_out.subset(index["patient_id"]),
                                 horizons=rule.horizons, index_dates=index, progress=False,
                                 cache_dir=cache_dir)
    at = pd.DataFrame({"patient_id": index["patient_id"].to_numpy(),
                       "date": index["index_date"].to_numpy()})
    covariates = features_at(held_out, at)
    by = [c for c in DEFAULT_SUBGROUPS if c in covariates.columns]
    metrics = [m for m in DELTA_METRICS if m.name in CARD_METRICS]
    parts = []
    for h in rule.horizons:
        frame = scored_rows(predictions, outcomes, h, rule.rapid_rate).merge(
            covariates[["patient_id", *by]], on="patient_id", how="left")
        parts.append(subgroup_metrics(frame, by=by, metrics=metrics, n_boot=n_boot, seed=seed)
                     .assign(horizon_years=h))
    return card_table(pd.concat(parts, ignore_index=True))


def _cell(row: pd.Series) -> str:
    if row["note"]:
        return "too small"
    return f"{row['value']:.2f} ({row['ci_lo']:.2f} to {row['ci_hi']:.2f})"


def card_table(long: pd.DataFrame) -> pd.DataFrame:
    """One row per subgroup level and horizon: counts and each metric as ``value (95% CI)``
    or ``too small``; ``long`` is :func:`~progression.subgroups.subgroup_metrics` output with
    ``horizon_years``."""
    rows = []
    horizons = sorted(long["horizon_years"].unique())
    for variable in dict.fromkeys(long["variable"]):
        of_variable = long[long["variable"] == variable]
        for level in dict.fromkeys(of_variable["level"]):
            for h in horizons:
                part = of_variable[(of_variable["level"] == level)
                                   & (of_variable["horizon_years"] == h)].set_index("metric")
                if part.empty:
                    continue
                row = {"subgroup": variable, "level": level, "horizon (years)": f"{h:g}",
                       "patients": int(part["n"].iloc[0]), "rapid": int(part["n_rapid"].iloc[0])}
                for name, header in CARD_METRICS.items():
                    row[header] = _cell(part.loc[name]) if name in part.index else ""
                rows.append(row)
    return pd.DataFrame(rows)
