"""Read a predictions table, pick one horizon, rank patients and select the fast progressors.

Any table with the predictions-table columns (docs/architecture.md) can act as a
selector: the model's, the clinical matrix's, or one a user wrote by hand. Files are
read by :func:`progression.evaluate.inputs.read_predictions` (columns, numbers, dates),
then checked for what a selection needs (no empty forecast, ``p_rapid`` in [0, 1],
``lo <= hi``, one row per patient and horizon).

Ranking and ties
----------------
Patients are ranked by ``risk_score`` (predicted SvdH units/year, higher = faster),
then ``p_rapid``, then ``delta_svdh_pred`` (all descending), and finally by
``patient_id`` ascending as text. The order is therefore total and does not depend on
the row order of the file: two runs on the same table always select the same
patients, and a tie at the cut is broken by the next key, not by including everybody
tied.

Selection rules (exactly one):

* ``top_fraction`` f: the first ``ceil(f * N)`` ranked patients of the N screened.
* ``p_rapid_threshold`` t: every patient with ``p_rapid >= t`` (ProgressionError if
  nobody qualifies).
* ``enrol`` n: the first n ranked patients (ProgressionError if n > N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from progression.errors import ProgressionError
from progression.evaluate.inputs import PREDICTION_COLUMNS

NUMERIC_COLUMNS = ("horizon_years", "delta_svdh_pred", "delta_svdh_lo", "delta_svdh_hi", "p_rapid",
                   "risk_score")
RANK_KEYS = ("risk_score", "p_rapid", "delta_svdh_pred")


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read and check a predictions CSV; errors name the file, the column or the row."""
    from progression.evaluate.inputs import read_predictions as read_table

    return check_predictions(read_table(path), str(path))


def check_predictions(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate a predictions table held in memory (``source`` names it in messages)."""
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns and c != "note"]
    if missing:
        raise ProgressionError(
            f"{source}: missing column(s) {', '.join(missing)}; a predictions table needs "
            f"{', '.join(PREDICTION_COLUMNS)} (as written by `progression predict`)"
        )
    frame = frame.copy()
    if "note" not in frame.columns:
        frame["note"] = ""
    frame["note"] = frame["note"].fillna("").astype(str)
    frame["patient_id"] = frame["patient_id"].astype(str)
    for column in NUMERIC_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ProgressionError(
                f"{source}: column '{column}' line {row + 2} (patient "
                f"{frame['patient_id'].iloc[row]}) is empty or not a number "
                f"({frame[column].iloc[row]!r}); every forecast needs a value"
            )
        frame[column] = values.astype(float)
    checks = (
        (~frame["p_rapid"].between(0, 1), "p_rapid is outside [0, 1]"),
        (frame["delta_svdh_lo"] > frame["delta_svdh_hi"], "delta_svdh_lo > delta_svdh_hi"),
        (frame["horizon_years"] <= 0, "horizon_years is not > 0"),
    )
    for bad, what in checks:
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ProgressionError(
                f"{source}: line {row + 2} (patient {frame['patient_id'].iloc[row]}): {what}"
            )
    if frame.empty:
        raise ProgressionError(f"{source}: the predictions table has no rows")
    return frame


def at_horizon(frame: pd.DataFrame, horizon: float, source: str) -> pd.DataFrame:
    """The rows for ``horizon`` years, one per patient (duplicates are an error)."""
    rows = frame[np.isclose(frame["horizon_years"], horizon)]
    if rows.empty:
        have = ", ".join(f"{h:g}" for h in sorted(frame["horizon_years"].unique()))
        raise ProgressionError(
            f"{source}: no forecasts for horizon {horizon:g} years; the table has horizons "
            f"{have}; pass one of them with --horizon"
        )
    dup = rows["patient_id"].duplicated()
    if dup.any():
        raise ProgressionError(
            f"{source}: patient {rows['patient_id'][dup].iloc[0]} has more than one forecast "
            f"for horizon {horizon:g} years; keep one row per patient and horizon"
        )
    return rows.reset_index(drop=True)


def rank_patients(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` sorted fastest-first with a 1-based ``rank`` column (ties: module docstring)."""
    ordered = frame.sort_values(
        [*RANK_KEYS, "patient_id"], ascending=[False] * len(RANK_KEYS) + [True], kind="mergesort"
    ).reset_index(drop=True)
    ordered.insert(1, "rank", np.arange(1, len(ordered) + 1))
    return ordered


@dataclass(frozen=True)
class SelectionRule:
    """How many of the screened patients to enrol; set exactly one field."""

    top_fraction: float | None = None
    p_rapid_threshold: float | None = None
    enrol: int | None = None

    def __post_init__(self) -> None:
        given = [v is not None for v in (self.top_fraction, self.p_rapid_threshold, self.enrol)]
        if sum(given) != 1:
            raise ProgressionError(
                "give exactly one selection rule: --top-fraction, --p-rapid-threshold or --enrol"
            )
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            raise ProgressionError(
                f"--top-fraction must be in (0, 1] (got {self.top_fraction}); e.g. 0.3 enrols "
                "the 30% predicted to progress fastest"
            )
        if self.p_rapid_threshold is not None and not 0 <= self.p_rapid_threshold <= 1:
            raise ProgressionError(
                f"--p-rapid-threshold must be in [0, 1] (got {self.p_rapid_threshold})"
            )
        if self.enrol is not None and self.enrol < 1:
            raise ProgressionError(f"--enrol must be at least 1 patient (got {self.enrol})")

    def describe(self) -> str:
        if self.top_fraction is not None:
            return f"top {self.top_fraction:.0%} by predicted progression rate"
        if self.p_rapid_threshold is not None:
            return f"p_rapid >= {self.p_rapid_threshold:g}"
        return f"the {self.enrol} patients predicted to progress fastest"


def top_count(fraction: float, n_screened: int) -> int:
    """Patients enrolled when the top ``fraction`` of ``n_screened`` is taken (at least 1)."""
    return max(1, math.ceil(fraction * n_screened - 1e-9))


def select(frame: pd.DataFrame, rule: SelectionRule, source: str) -> pd.DataFrame:
    """The selected patients of one horizon's predictions, ranked fastest first."""
    ranked = rank_patients(frame)
    n = len(ranked)
    if rule.top_fraction is not None:
        return ranked.head(top_count(rule.top_fraction, n))
    if rule.enrol is not None:
        if rule.enrol > n:
            raise ProgressionError(
                f"--enrol {rule.enrol} is more than the {n} patients forecast in {source}; "
                f"use --enrol {n} or fewer, or --top-fraction"
            )
        return ranked.head(rule.enrol)
    chosen = ranked[ranked["p_rapid"] >= rule.p_rapid_threshold]
    if chosen.empty:
        raise ProgressionError(
            f"no patient in {source} has p_rapid >= {rule.p_rapid_threshold:g} (the highest is "
            f"{ranked['p_rapid'].max():.3f}); lower --p-rapid-threshold or use --top-fraction"
        )
    return chosen


def predictive_sd(lo: np.ndarray, hi: np.ndarray, level: float) -> np.ndarray:
    """Per-patient SD of the predicted change (SvdH units) from a central ``level`` interval.

    Treats the interval as normal: sd = (hi - lo) / (2 z_{(1+level)/2}).
    """
    if not 0 < level < 1:
        raise ProgressionError(f"interval level must be in (0, 1) (got {level}); e.g. 0.9")
    return (np.asarray(hi, float) - np.asarray(lo, float)) / (2 * stats.norm.ppf((1 + level) / 2))


@dataclass(frozen=True)
class PopulationSummary:
    """What the predictive distribution says about a population of patients.

    ``mean_delta`` and ``sd_delta`` are in SvdH units over the horizon; ``sd_delta``
    combines the spread within each patient's forecast with the spread between
    patients (law of total variance: Var Y = E[Var(Y|i)] + Var(E[Y|i])).
    """

    n: int
    mean_delta: float
    sd_delta: float
    sd_within: float
    sd_between: float
    rapid_fraction: float


def summarise(frame: pd.DataFrame, interval_level: float) -> PopulationSummary:
    """Mean, SD and expected rapid-progressor fraction of one horizon's forecasts."""
    sd_i = predictive_sd(frame["delta_svdh_lo"], frame["delta_svdh_hi"], interval_level)
    means = frame["delta_svdh_pred"].to_numpy(float)
    within = float(np.mean(sd_i**2))
    between = float(np.var(means))  # population variance: the trial samples from these patients
    return PopulationSummary(
        n=len(frame),
        mean_delta=float(means.mean()),
        sd_delta=math.sqrt(within + between),
        sd_within=math.sqrt(within),
        sd_between=math.sqrt(between),
        rapid_fraction=float(frame["p_rapid"].mean()),
    )
