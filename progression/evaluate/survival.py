"""Time to progression with lifelines: Kaplan-Meier by risk tertile, log-rank, Cox PH.

The time-to-event outcome is the outcomes table's ``time_to_event_years`` / ``event`` (years
from the index to the first follow-up visit showing progression; see
:mod:`progression.data.outcomes`). Harrell's C of every method lives in
:mod:`progression.metrics` (``cindex_event``).

* :func:`km_by_tertile`: patients split into thirds of the predicted ``risk_score`` (low /
  middle / high), a Kaplan-Meier progression-free curve per third and a log-rank test across
  the three (``lifelines.statistics.multivariate_logrank_test``).
* :func:`cox_models`: Cox proportional hazards (``lifelines.CoxPHFitter``) with the model's
  risk score alone and with the risk score plus the clinical covariates present in the
  cohort, as many as 10 events per term allow (taken in the order of
  :data:`CLINICAL_COVARIATES`). Continuous inputs are standardised, so a hazard ratio is per
  standard deviation (0/1 inputs stay per unit). Complete cases only.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError, ConvergenceWarning
from lifelines.statistics import multivariate_logrank_test

from progression.columns import BINARY_COVARIATES
from progression.evaluate.baselines import binary_status

log = logging.getLogger(__name__)

TERTILES = ("low", "middle", "high")
# Clinical covariates a Cox model adjusts for when the cohort has them (docs/architecture.md),
# in order of priority: established predictors of radiographic progression first.
CLINICAL_COVARIATES = ("svdh_last", "crp", "rf", "acpa", "sjc28", "esr", "das28", "haq",
                       "tjc28", "age")
MIN_COVERAGE = 0.8  # a covariate joins the Cox model when >= 80% of patients have it
EVENTS_PER_TERM = 10  # at most one Cox term per 10 events (Peduzzi et al., J Clin Epi 1995)


@dataclass
class KaplanMeierResult:
    """Fitted curves per risk tertile and the log-rank test across them."""

    fitters: dict[str, KaplanMeierFitter]
    counts: dict[str, dict[str, int]]
    logrank_statistic: float
    logrank_p: float
    logrank_df: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "groups": self.counts,
            "median_time_years": {
                g: _finite_or_none(f.median_survival_time_) for g, f in self.fitters.items()
            },
            "logrank_statistic": self.logrank_statistic,
            "logrank_p": self.logrank_p,
            "logrank_df": self.logrank_df,
        }


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def risk_tertiles(risk: np.ndarray) -> np.ndarray:
    """'low' / 'middle' / 'high' third of ``risk`` (ties split by order, so thirds are equal)."""
    ranks = pd.Series(risk).rank(method="first").to_numpy()
    return np.array(TERTILES)[np.minimum((3 * (ranks - 1) / len(risk)).astype(int), 2)]


def survival_frame(predictions: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """One row per patient with ``risk_score``, ``time_to_event_years`` and ``event``."""
    risk = predictions.sort_values("horizon_years").drop_duplicates("patient_id")[
        ["patient_id", "risk_score"]
    ]
    events = outcomes.drop_duplicates("patient_id")[["patient_id", "time_to_event_years", "event"]]
    frame = risk.merge(events, on="patient_id", how="inner")
    return frame.dropna(subset=["risk_score", "time_to_event_years", "event"]).reset_index(
        drop=True
    )


def km_by_tertile(frame: pd.DataFrame) -> KaplanMeierResult | None:
    """Kaplan-Meier curves by risk tertile + log-rank; None with < 6 patients or no event."""
    if len(frame) < 6 or frame["event"].sum() == 0:
        return None
    groups = risk_tertiles(frame["risk_score"].to_numpy(float))
    fitters, counts = {}, {}
    for group in TERTILES:
        part = frame[groups == group]
        label = f"{group} risk (n={len(part)}, {int(part['event'].sum())} events)"
        fitters[group] = KaplanMeierFitter(label=label).fit(
            part["time_to_event_years"], part["event"]
        )
        counts[group] = {"n": int(len(part)), "events": int(part["event"].sum())}
    test = multivariate_logrank_test(frame["time_to_event_years"], groups, frame["event"])
    return KaplanMeierResult(fitters, counts, float(test.test_statistic), float(test.p_value),
                             int(test.degrees_of_freedom))


def _standardise(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = frame.copy()
    for column in columns:
        values = out[column].astype(float)
        if set(values.dropna().unique()) <= {0.0, 1.0}:
            continue  # binary: hazard ratio per unit (positive vs negative)
        sd = values.std()
        out[column] = (values - values.mean()) / sd if sd > 0 else values - values.mean()
    return out


def fit_cox(frame: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    """Cox PH on ``columns`` (standardised); hazard ratios with 95% CI and p per column."""
    data = frame[["time_to_event_years", "event", *columns]].dropna()
    used = [c for c in columns if data[c].nunique() > 1]  # a constant column cannot be fitted
    data = data[["time_to_event_years", "event", *used]].copy()
    if len(data) < 10 or data["event"].sum() < 2:
        return {"error": f"too few complete cases ({len(data)}) or events "
                         f"({int(data['event'].sum())}) to fit", "n": len(data)}
    if not used:
        return {"error": f"{', '.join(columns)}: the same value for every patient",
                "n": len(data)}
    data = _standardise(data, used)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # Half steps: lifelines' default Newton step (0.95) can jump to a wrong, diverging
            # solution when a few patients have extreme risk scores (heavy-tailed rates).
            cph = CoxPHFitter().fit(data, duration_col="time_to_event_years", event_col="event",
                                    fit_options={"step_size": 0.5})
        except ConvergenceError as exc:
            return {"error": f"Cox model did not converge ({str(exc).splitlines()[0]})",
                    "n": len(data)}
    # lifelines warns (e.g. near-separation of a covariate) instead of failing: keep the gist.
    notes = sorted({str(w.message).strip().splitlines()[0] for w in caught
                    if issubclass(w.category, ConvergenceWarning | RuntimeWarning)})
    summary = cph.summary
    return {
        "n": int(len(data)),
        "events": int(data["event"].sum()),
        "warnings": notes,
        "concordance": float(cph.concordance_index_),
        "terms": {
            term: {
                "hr": float(summary.loc[term, "exp(coef)"]),
                "hr_lo": float(summary.loc[term, "exp(coef) lower 95%"]),
                "hr_hi": float(summary.loc[term, "exp(coef) upper 95%"]),
                "p": float(summary.loc[term, "p"]),
            }
            for term in used
        },
    }


def cox_models(frame: pd.DataFrame, clinical: pd.DataFrame | None) -> dict[str, Any]:
    """``risk_only`` and ``risk_plus_clinical`` Cox models (see module docstring).

    ``clinical``: one row per patient (``patient_id`` + covariates at the index), e.g. from
    :func:`progression.evaluate.baselines.features_at`.
    """
    out = {"risk_only": fit_cox(frame, ["risk_score"])}
    if clinical is None:
        return out
    data = frame.merge(clinical, on="patient_id", how="left")
    usable = []
    for column in CLINICAL_COVARIATES:
        if column not in data.columns:
            continue
        values = (binary_status(data[column]) if column in BINARY_COVARIATES
                  else pd.to_numeric(data[column], errors="coerce"))
        if values.notna().mean() >= MIN_COVERAGE and values.nunique() > 1:
            data[column] = values
            usable.append(column)
    if not usable:
        return out
    allowed = int(frame["event"].sum()) // EVENTS_PER_TERM - 1  # one term is the risk score
    if allowed < 1:
        out["risk_plus_clinical"] = {
            "error": f"only {int(frame['event'].sum())} events: adjusting the risk score for "
                     f"clinical covariates needs >= {2 * EVENTS_PER_TERM} events "
                     f"({EVENTS_PER_TERM} per term)",
            "n": len(frame),
        }
        return out
    out["risk_plus_clinical"] = fit_cox(data, ["risk_score", *usable[:allowed]])
    return out
