"""What is known about each patient at a date: covariates carried forward and past scores.

One home for the features every consumer reads at a landmark: the baselines' training
examples and forecasts, the evaluation's cohort description and Cox models, and the subgroups
(sex, site, RF, ACPA, treatment, baseline damage, scored visits) of the evaluation report and
the model card.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from progression.cohort import Cohort
from progression.data.horizons import slope_defined, years_between


def covariate_columns(cohort: Cohort) -> tuple[list[str], list[str]]:
    """(static covariates from patients.csv, time-varying covariates from visits.csv).

    The cohort's schema says which columns are covariates (in file order here).
    """
    schema = cohort.schema
    static = {*schema.static_numeric, *schema.static_categorical}
    varying = {*schema.visit_numeric, *schema.visit_categorical}
    return ([c for c in cohort.patients.columns if c in static],
            [c for c in cohort.visits.columns if c in varying])


def features_at(cohort: Cohort, at: pd.DataFrame) -> pd.DataFrame:
    """What is known about each patient at a date: one row per row of ``at``.

    ``at`` has ``patient_id`` and ``date``. Returned columns: those of ``at``, the static
    covariates, each time-varying covariate's last value on or before ``date`` (carried
    forward over visits where it is missing), ``age`` (from ``birth_date`` when no ``age``
    column exists), and from scored visits on or before ``date``: ``svdh_last``,
    ``svdh_erosion_last``, ``svdh_jsn_last``, ``years_since_scored``, ``n_scored`` and
    ``past_rate`` (least-squares slope of ``svdh_total`` over time, SvdH units/yr; NaN unless
    :func:`~progression.data.horizons.slope_defined`).
    """
    static, varying = covariate_columns(cohort)
    left = at.reset_index(drop=True).assign(_row=lambda f: np.arange(len(f)))
    left = left.sort_values("date")

    visits = cohort.visits.sort_values(["patient_id", "visit_date"])
    carried = visits[["patient_id", "visit_date"]].copy()
    if varying:
        carried[varying] = visits.groupby("patient_id")[varying].ffill()
    out = pd.merge_asof(left, carried.sort_values("visit_date"), left_on="date",
                        right_on="visit_date", by="patient_id", direction="backward")
    out = out.drop(columns="visit_date")

    scored = visits.dropna(subset=["svdh_total"]).copy()
    t0 = visits.groupby("patient_id")["visit_date"].min()
    scored["t"] = years_between(scored["patient_id"].map(t0), scored["visit_date"]).astype(float)
    grouped = scored.groupby("patient_id")
    scored["n_scored"] = grouped.cumcount() + 1
    scored["_st"] = scored["t"]
    scored["_ss"] = scored["svdh_total"]
    scored["_stt"] = scored["t"] ** 2
    scored["_sts"] = scored["t"] * scored["svdh_total"]
    sums = scored.groupby("patient_id")[["_st", "_ss", "_stt", "_sts"]].cumsum()
    n = scored["n_scored"]
    denom = n * sums["_stt"] - sums["_st"] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        scored["past_rate"] = np.where(
            slope_defined(n, denom), (n * sums["_sts"] - sums["_st"] * sums["_ss"]) / denom, np.nan
        )
    scored = scored.rename(
        columns={"svdh_total": "svdh_last", "svdh_erosion": "svdh_erosion_last",
                 "svdh_jsn": "svdh_jsn_last", "visit_date": "scored_date"}
    )[["patient_id", "scored_date", "svdh_last", "svdh_erosion_last", "svdh_jsn_last",
       "n_scored", "past_rate"]]
    out = pd.merge_asof(out.sort_values("date"), scored.sort_values("scored_date"),
                        left_on="date", right_on="scored_date", by="patient_id",
                        direction="backward")
    out["years_since_scored"] = years_between(out["scored_date"], out["date"]).astype(float)
    out["n_scored"] = out["n_scored"].fillna(0).astype(int)
    out = out.drop(columns="scored_date")

    patients = cohort.patients[["patient_id", *static]
                               + (["birth_date"] if "birth_date" in cohort.patients else [])]
    out = out.merge(patients, on="patient_id", how="left")
    if "age" not in out.columns and "birth_date" in out.columns:
        out["age"] = years_between(out["birth_date"], out["date"]).astype(float)
    out = out.drop(columns=[c for c in ("birth_date",) if c in out.columns])
    return out.sort_values("_row").drop(columns="_row").reset_index(drop=True)
