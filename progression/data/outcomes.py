"""Observed outcomes to score forecasts against: the outcomes table.

One row per patient x horizon, columns :data:`~progression.evaluate.inputs.OUTCOME_COLUMNS`:

``patient_id``, ``index_date`` (the forecast origin, YYYY-MM-DD), ``horizon_years``,
``delta_svdh_obs`` (SvdH change from the index over the horizon; empty = not observed),
``time_to_event_years`` and ``event`` (per patient, repeated on each of its rows: years from
the index to the first follow-up visit showing progression, ``event`` = 1, or to the last
follow-up visit, ``event`` = 0; both empty without follow-up).

Progression events (:class:`OutcomeRule`): ``rapid`` = the change since the index reaches
the rapid rate per elapsed year (5 SvdH units/yr; a Larsen cohort's is its system's,
``progression.scoring.systems``); ``sdc`` = the change exceeds the smallest detectable change
(``progression.scoring.exceeds_sdc``, default 5 SvdH units). Changes are in the cohort's
score units (``Cohort.scoring``), whatever the ``svdh`` in the column names.

Two sources:

* a simulated cohort (``<cohort>/truth/``): ``delta_svdh_obs`` = ``delta_true_<h>y`` of
  ``truth.csv``; events from ``followup.csv`` (every 0.5 y up to 3 y after the index), using the
  noise-free ``svdh_total_true`` (consistent with the true change) or, with
  ``observed_followup``, the reader-noisy ``svdh_total`` as a trial would see it;
* a real cohort with scores at later visits: a landmark split, see :func:`landmark_outcomes`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from progression.cohort import Cohort
from progression.columns import OUTCOME_COLUMNS
from progression.data.horizons import LANDMARK_TOLERANCE_YEARS, years_between
from progression.errors import ProgressionError
from progression.scoring import DEFAULT_SDC, RAPID_RATE, ScoringSystem, exceeds_sdc, is_rapid

log = logging.getLogger(__name__)


class NoObservedOutcomes(ProgressionError):
    """No patient of a cohort has a scored visit a horizon after a scored, imaged visit.

    The message says what is missing and stays neutral about options: the fix depends on the
    command that asked (``evaluate``: ``--tolerance``, ``--outcomes``; ``enrich``:
    ``--outcomes``; ``train``: none, calibration is skipped), so the caller adds it.
    """


@dataclass(frozen=True)
class OutcomeRule:
    """How observed changes and progression events are defined (years, score units).

    ``rapid_rate`` and ``sdc_units`` are in the cohort's score units (``sdc_units`` None:
    the scoring system's default SDC, 5 SvdH units); :meth:`for_system` gives a Larsen cohort
    its own (``evaluate`` does so for the cohort it scores).
    """

    horizons: tuple[float, ...] = (1.0, 2.0)
    event: str = "rapid"  # "rapid": >= rapid_rate units/yr since the index; "sdc": > sdc_units
    sdc_units: float | None = None
    tolerance_years: float = LANDMARK_TOLERANCE_YEARS  # a later visit counts for index + h within this
    observed_followup: bool = False  # simulated cohorts: events from reader-noisy scores
    rapid_rate: float = RAPID_RATE  # units/year (5 SvdH units/yr)

    def for_system(self, system: ScoringSystem) -> OutcomeRule:
        """The same rule in ``system``'s units: its rapid rate, and its SDC unless one is set."""
        return replace(self, rapid_rate=system.rapid_rate,
                       sdc_units=system.sdc if self.sdc_units is None else self.sdc_units)

    def __post_init__(self) -> None:
        if self.event not in ("rapid", "sdc"):
            raise ProgressionError(f"event rule '{self.event}' is unknown; use 'rapid' or 'sdc'")
        if any(h <= 0 for h in self.horizons):
            raise ProgressionError(f"horizons must be > 0 years, got {self.horizons}")
        if self.tolerance_years < 0:
            raise ProgressionError("the landmark tolerance must be >= 0 years")


def first_event(years: np.ndarray, change: np.ndarray, rule: OutcomeRule) -> tuple[float, float]:
    """``(time, event)`` from follow-up visits at ``years`` after the index with ``change``.

    The first visit meeting the rule gives ``(its time, 1)``; otherwise the patient is censored
    at the last visit, ``(last time, 0)``. Visits at time 0 or without a score are ignored;
    no usable visit gives ``(nan, nan)``.
    """
    keep = (years > 0) & np.isfinite(change)
    years, change = years[keep], change[keep]
    if years.size == 0:
        return float("nan"), float("nan")
    order = np.argsort(years)
    years, change = years[order], change[order]
    sdc = DEFAULT_SDC if rule.sdc_units is None else rule.sdc_units
    hit = is_rapid(change, years, rule.rapid_rate) if rule.event == "rapid" else exceeds_sdc(change, sdc)
    hit = np.atleast_1d(hit)
    if hit.any():
        return float(years[np.argmax(hit)]), 1.0
    return float(years[-1]), 0.0


def _survival(frame: pd.DataFrame, rule: OutcomeRule) -> pd.DataFrame:
    """Per patient ``time_to_event_years`` and ``event`` from columns ``years``, ``change``."""
    rows = []
    for pid, group in frame.groupby("patient_id", sort=True):
        t, e = first_event(group["years"].to_numpy(float), group["change"].to_numpy(float), rule)
        rows.append((pid, t, e))
    return pd.DataFrame(rows, columns=["patient_id", "time_to_event_years", "event"])


def _expand(base: pd.DataFrame, rule: OutcomeRule) -> pd.DataFrame:
    """Patient rows (patient_id, index_date, delta_<h>) -> one row per patient x horizon."""
    parts = []
    for h in rule.horizons:
        part = base[["patient_id", "index_date", "time_to_event_years", "event"]].copy()
        part["horizon_years"] = float(h)
        part["delta_svdh_obs"] = base[f"delta_{h:g}"]
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    return out[list(OUTCOME_COLUMNS)].sort_values(["patient_id", "horizon_years"]).reset_index(
        drop=True
    )


def outcomes_from_truth(cohort: Cohort, rule: OutcomeRule = OutcomeRule()) -> pd.DataFrame:
    """Outcomes of a simulated cohort from its ``truth/`` directory (see module docstring)."""
    truth_dir = cohort.truth_dir
    if truth_dir is None:
        raise ProgressionError(f"cohort '{cohort.root}' has no truth/truth.csv (not simulated)")
    truth = pd.read_csv(truth_dir / "truth.csv", dtype={"patient_id": str})
    truth["index_date"] = pd.to_datetime(truth["index_date"])
    base = truth[["patient_id", "index_date"]].copy()
    for h in rule.horizons:
        column = f"delta_true_{h:g}y"
        if column not in truth.columns:
            raise ProgressionError(
                f"{truth_dir / 'truth.csv'} has no column {column}: the simulator writes truth "
                f"for horizons of 1 and 2 years only; evaluate with --horizons 1,2"
            )
        base[f"delta_{h:g}"] = truth[column].to_numpy(float)

    followup_path = truth_dir / "followup.csv"
    if followup_path.is_file():
        followup = pd.read_csv(followup_path, dtype={"patient_id": str})
        score = "svdh_total" if rule.observed_followup else "svdh_total_true"
        start = _index_scores(cohort, truth, score)
        followup = followup.merge(start, on="patient_id", how="inner")
        followup["years"] = followup["years_from_index"].astype(float)
        followup["change"] = followup[score].astype(float) - followup["svdh_index"]
        base = base.merge(_survival(followup, rule), on="patient_id", how="left")
    else:
        log.warning("%s not found: no time-to-event outcomes (survival analysis skipped)",
                    followup_path)
        base["time_to_event_years"] = np.nan
        base["event"] = np.nan
    return _expand(base, rule)


def _index_scores(cohort: Cohort, truth: pd.DataFrame, score: str) -> pd.DataFrame:
    """The score each follow-up change is measured from: noise-free truth, or the index read."""
    if score == "svdh_total_true":
        return truth[["patient_id", "svdh_true_index"]].rename(
            columns={"svdh_true_index": "svdh_index"}
        )
    reads = cohort.visits.merge(truth[["patient_id", "index_date"]], on="patient_id")
    reads = reads[reads["visit_date"] == reads["index_date"]]
    return reads[["patient_id", "svdh_total"]].rename(columns={"svdh_total": "svdh_index"})


def landmark_outcomes(cohort: Cohort, rule: OutcomeRule = OutcomeRule()) -> pd.DataFrame:
    """Landmark outcomes for a real cohort whose visits.csv has scores after the forecast origin.

    Index visit, per patient: among the visits that are scored (``svdh_total``) and imaged
    (any scored visit when the patient has no image at all), the one from which the most
    horizons can be observed (a scored visit within ``tolerance_years`` of ``index + h``);
    among equals, the latest. Patients from whom no horizon can be observed are left out.
    Forecasts must then be made from the truncated history (``index_dates`` of
    ``predict_cohort`` and of the baselines), so the later visits are never seen.

    ``delta_svdh_obs`` at horizon h: the scored visit nearest to ``index + h`` within the
    tolerance, its change from the index rescaled to exactly h years (``change * h / elapsed``,
    i.e. a locally constant rate); empty when no scored visit is that close.
    Events: :func:`first_event` over all later scored visits.
    """
    scored = cohort.visits.dropna(subset=["svdh_total"])[["patient_id", "visit_date", "svdh_total"]]
    imaged = cohort.images[["patient_id", "visit_date"]].drop_duplicates().assign(imaged=True)
    scored = scored.merge(imaged, on=["patient_id", "visit_date"], how="left")
    scored["imaged"] = scored["imaged"].astype("boolean").fillna(False).astype(bool)
    tol = rule.tolerance_years
    horizons = np.asarray(rule.horizons, dtype=float)

    rows, later_rows = [], []
    for pid, visits in scored.groupby("patient_id", sort=True):
        dates = visits["visit_date"].to_numpy()
        scores = visits["svdh_total"].to_numpy(float)
        imaged = visits["imaged"].to_numpy(bool)
        index_pos, best_count = None, 0
        for pos in range(len(dates) - 1, -1, -1):  # latest first: ties keep the latest
            if imaged.any() and not imaged[pos]:
                continue
            elapsed = years_between(dates[pos], dates).to_numpy(float)
            elapsed[elapsed <= 0] = np.inf  # only later visits observe an outcome
            count = int(np.sum(np.abs(elapsed[None, :] - horizons[:, None]).min(axis=1) <= tol))
            if count > best_count:
                index_pos, best_count = pos, count
        if index_pos is None:
            continue
        elapsed = years_between(dates[index_pos], dates).to_numpy(float)
        change = scores - scores[index_pos]
        row = {"patient_id": pid, "index_date": pd.Timestamp(dates[index_pos])}
        for h in rule.horizons:
            gap = np.abs(elapsed - h)
            gap[elapsed <= 0] = np.inf
            best = int(np.argmin(gap))
            row[f"delta_{h:g}"] = change[best] * h / elapsed[best] if gap[best] <= tol else np.nan
        rows.append(row)
        after = elapsed > 0
        later_rows.append(pd.DataFrame({"patient_id": pid, "years": elapsed[after],
                                        "change": change[after]}))
    if not rows:
        horizon_text = " or ".join(f"{h:g}" for h in rule.horizons)
        raise NoObservedOutcomes(
            f"cohort '{cohort.root}': no patient has a scored visit {horizon_text} y "
            f"(+-{tol:g} y) after a scored, imaged visit, so no outcome can be observed; "
            "give scores at later visits"
        )
    base = pd.DataFrame(rows)
    base = base.merge(_survival(pd.concat(later_rows, ignore_index=True), rule),
                      on="patient_id", how="left")
    left_out = cohort.patients["patient_id"].nunique() - len(base)
    if left_out:
        log.info("landmark split: %d of %d patients have no usable index visit and are left out",
                 left_out, cohort.patients["patient_id"].nunique())
    return _expand(base, rule)


def derive_outcomes(cohort: Cohort, rule: OutcomeRule = OutcomeRule()) -> pd.DataFrame:
    """Outcomes from the simulator's truth when present, else by the landmark split."""
    if cohort.truth_dir is not None:
        return outcomes_from_truth(cohort, rule)
    return landmark_outcomes(cohort, rule)


def scored_rows(predictions: pd.DataFrame, outcomes: pd.DataFrame, h: float,
                rapid_rate: float = RAPID_RATE) -> pd.DataFrame:
    """Predictions joined with outcomes for horizon ``h`` (one row per patient with an
    outcome row), with the 0/1 rapid outcome ``rapid_obs`` (>= ``rapid_rate`` units/year, in
    the cohort's score units)."""
    pred = predictions[np.isclose(predictions["horizon_years"], h)]
    obs = outcomes[np.isclose(outcomes["horizon_years"], h)][["patient_id", "delta_svdh_obs"]]
    rows = obs.merge(pred.drop(columns=["index_date", "horizon_years"]), on="patient_id",
                     how="left")
    delta = rows["delta_svdh_obs"].to_numpy(float)
    rows["rapid_obs"] = np.where(np.isfinite(delta), is_rapid(np.nan_to_num(delta), h, rapid_rate),
                                 np.nan)
    return rows
