"""Baselines the model must beat, each answering the same two calls.

Every baseline is a small class with ONE interface::

    baseline = ClinicalMatrix().fit(train_cohort)          # -> self
    table = baseline.predict(cohort, horizons=(1.0, 2.0), index_dates=None)

``train_cohort`` / ``cohort`` are cohort directories (format v1), ``Cohort`` objects from
``progression.cohort.read_cohort`` / ``Cohort.from_frames``.
``predict`` returns a predictions table with exactly the model's columns
(:data:`~progression.evaluate.inputs.PREDICTION_COLUMNS`), so every metric, the enrichment
selector and the reports run identically on every method. ``index_dates`` (patient_id ->
date) truncate each patient's history (landmark evaluation); by default the index is the
last visit with an image, as for the model.

Training examples ("pairs"): every scored visit (``svdh_total``) of a training patient that
has a later scored visit 0.5-3 years on; the later visit nearest to one year on is taken, and
the target is the annual rate ``(score_end - score_start) / years`` in SvdH units/year. The
features are those known at the start visit (covariates carried forward, static covariates,
last scores, past rate).

Forecasts are rates r (units/yr): ``delta_svdh_pred = r * h``; ``risk_score = r``. The
interval and ``p_rapid`` come from the training residuals of the rate (out-of-fold for the
covariates model): the forecast rate distribution is ``r + residuals``, so
``[lo, hi] = h * quantiles`` at the central ``interval_level`` and
``p_rapid = P(r + residual >= 5 units/yr)``. ``svdh_index_pred`` is the last given score
before the index plus ``r`` times the years since it (baselines do not read images).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import GroupKFold, ParameterSampler, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline

from progression.cohort import Cohort
from progression.columns import PREDICTION_COLUMNS
from progression.data.features import features_at
from progression.data.horizons import BASELINE_PAIR_WINDOW, years_between
from progression.errors import ProgressionError
from progression.evaluate.inputs import as_index_dates, load_cohort
from progression.scoring import RAPID_RATE
from progression.simulate.oracle import oracle_horizons, oracle_predictions, read_truth

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------- features
def categorical_covariates(cohort: Cohort) -> set[str]:
    """Covariates the cohort typed as categorical (the schema decides, once, for every user)."""
    return {*cohort.schema.static_categorical, *cohort.schema.visit_categorical}


def training_pairs(cohort: Cohort) -> pd.DataFrame:
    """Training examples (see module docstring): features at the start visit + ``rate``."""
    scored = cohort.visits.dropna(subset=["svdh_total"])[["patient_id", "visit_date",
                                                          "svdh_total"]]
    pairs = scored.merge(scored, on="patient_id", suffixes=("", "_end"))
    pairs["gap_years"] = years_between(pairs["visit_date"], pairs["visit_date_end"]).astype(float)
    pairs = pairs[BASELINE_PAIR_WINDOW.contains(pairs["gap_years"])]
    if pairs.empty:
        return pd.DataFrame(columns=["patient_id", "date", "gap_years", "rate"])
    pairs = pairs.assign(_dist=BASELINE_PAIR_WINDOW.distance(pairs["gap_years"]))
    pairs = pairs.sort_values(["patient_id", "visit_date", "_dist", "gap_years"])
    pairs = pairs.drop_duplicates(["patient_id", "visit_date"])
    pairs["rate"] = (pairs["svdh_total_end"] - pairs["svdh_total"]) / pairs["gap_years"]
    at = pairs[["patient_id", "visit_date", "gap_years", "rate"]].rename(
        columns={"visit_date": "date"}
    )
    features = features_at(cohort, at[["patient_id", "date"]])
    features[["gap_years", "rate"]] = at[["gap_years", "rate"]].to_numpy()
    return features


def binary_status(values: pd.Series) -> pd.Series:
    """0/1 from 0/1, true/false or neg/pos text (rf, acpa); anything else is missing."""
    mapping = {"1": 1.0, "0": 0.0, "pos": 1.0, "positive": 1.0, "neg": 0.0, "negative": 0.0,
               "true": 1.0, "false": 0.0, "1.0": 1.0, "0.0": 0.0, "yes": 1.0, "no": 0.0}
    return values.map(lambda v: mapping.get(str(v).strip().lower(), np.nan)).astype(float)


# --------------------------------------------------------------------------- base class
class Baseline:
    """Common machinery: fit rates on training pairs, turn rates into a predictions table."""

    name = "baseline"

    def __init__(self, interval_level: float = 0.9) -> None:
        if not 0.0 < interval_level < 1.0:
            raise ProgressionError(f"interval_level must be in (0, 1), got {interval_level}")
        self.interval_level = interval_level
        self.residuals_: np.ndarray | None = None
        self.rapid_rate_ = RAPID_RATE  # units/yr of the training cohort's scoring system

    # Subclasses implement these two.
    def _fit_rates(self, pairs: pd.DataFrame) -> np.ndarray:
        """Fit on training pairs; return the (out-of-fold where it matters) fitted rates."""
        raise NotImplementedError

    def _predict_rates(self, features: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Rates (SvdH units/yr) and a note per patient for ``features_at`` rows."""
        raise NotImplementedError

    def _p_rapid(self, features: pd.DataFrame, rates: np.ndarray) -> np.ndarray:
        """P(rate >= the rapid rate) from the residual distribution around each forecast rate."""
        assert self.residuals_ is not None
        return (rates[:, None] + self.residuals_[None, :] >= self.rapid_rate_).mean(axis=1)

    def fit(self, train: Any) -> Self:
        """Fit on a training cohort (directory or Cohort); returns self."""
        tables = load_cohort(train)
        self.categorical_ = categorical_covariates(tables)
        self.rapid_rate_ = tables.system.rapid_rate
        pairs = training_pairs(tables)
        if len(pairs) < 2:
            raise ProgressionError(
                f"{self.name}: the training cohort '{tables.root}' has {len(pairs)} pair(s) of "
                f"scored visits {BASELINE_PAIR_WINDOW.min_years:g}-{BASELINE_PAIR_WINDOW.max_years:g} years apart; at least 2 "
                f"are needed (give {tables.system.total_column} at more visits or another "
                "--train-data)"
            )
        fitted = self._fit_rates(pairs)
        self.residuals_ = pairs["rate"].to_numpy(float) - fitted
        return self

    def predict(
        self,
        cohort: Any,
        horizons: Sequence[float] = (1.0, 2.0),
        index_dates: Any = None,
    ) -> pd.DataFrame:
        """Predictions table (one row per patient x horizon) from history up to each index."""
        if self.residuals_ is None:
            raise ProgressionError(f"{self.name}: call fit(train_cohort) before predict")
        tables = load_cohort(cohort)
        index = as_index_dates(index_dates, tables)
        index = index[index.index.isin(tables.patients["patient_id"])]
        at = pd.DataFrame({"patient_id": index.index, "date": index.to_numpy()})
        features = features_at(tables, at)
        rates, notes = self._predict_rates(features)
        return self._table(features, np.asarray(rates, float), notes, horizons)

    def _table(self, features: pd.DataFrame, rates: np.ndarray, notes: list[str],
               horizons: Sequence[float]) -> pd.DataFrame:
        assert self.residuals_ is not None
        tail = (1.0 - self.interval_level) / 2.0
        q_lo, q_hi = np.quantile(self.residuals_, [tail, 1.0 - tail])
        p_rapid = self._p_rapid(features, rates)
        index_pred = features["svdh_last"].to_numpy(float) + rates * features[
            "years_since_scored"
        ].to_numpy(float)
        parts = []
        for h in horizons:
            parts.append(pd.DataFrame({
                "patient_id": features["patient_id"].to_numpy(),
                "index_date": pd.to_datetime(features["date"]).dt.strftime("%Y-%m-%d").to_numpy(),
                "horizon_years": float(h),
                "svdh_index_pred": index_pred,
                "delta_svdh_pred": rates * h,
                "delta_svdh_lo": (rates + q_lo) * h,
                "delta_svdh_hi": (rates + q_hi) * h,
                "p_rapid": p_rapid,
                "risk_score": rates,
                "note": notes,
            }))
        table = pd.concat(parts, ignore_index=True)
        return table[list(PREDICTION_COLUMNS)].sort_values(["patient_id", "horizon_years"],
                                                           ignore_index=True)


# --------------------------------------------------------------------------- (a) cohort mean
class CohortMean(Baseline):
    """Everybody progresses at the training cohort's mean annual rate (SvdH units/yr)."""

    name = "cohort_mean"

    def _fit_rates(self, pairs: pd.DataFrame) -> np.ndarray:
        self.rate_ = float(pairs["rate"].mean())
        return np.full(len(pairs), self.rate_)

    def _predict_rates(self, features: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        return np.full(len(features), self.rate_), [""] * len(features)


# --------------------------------------------------------------------------- (b) linear
class LinearExtrapolation(Baseline):
    """The patient's own past rate continues: least-squares slope of ``svdh_total`` over time.

    Needs >= 2 scored visits up to the index; otherwise the training cohort's mean rate is
    used and ``note`` says so. Negative slopes are set to 0 (SvdH damage does not heal; a
    falling score is reading noise). Residuals are those of the past slope against the next
    interval's rate on training pairs that have a past slope.
    """

    name = "linear"
    FALLBACK_NOTE = "fewer than 2 scored visits: cohort mean rate"

    def _fit_rates(self, pairs: pd.DataFrame) -> np.ndarray:
        self.rate_ = float(pairs["rate"].mean())
        rates, _ = self._predict_rates(pairs)
        return rates

    def _predict_rates(self, features: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        past = features["past_rate"].to_numpy(float)
        has_past = np.isfinite(past)
        rates = np.where(has_past, np.maximum(past, 0.0), self.rate_)
        notes = ["" if ok else self.FALLBACK_NOTE for ok in has_past]
        return rates, notes


# --------------------------------------------------------------------------- (c) matrix
class ClinicalMatrix(Baseline):
    """Rapid-radiographic-progression risk matrix after Vastesaeger et al. (ASPIRE).

    Source: Vastesaeger N, Xu S, Aletaha D, St Clair EW, Smolen JS. A pilot risk model for the
    prediction of rapid radiographic progression in rheumatoid arthritis. Rheumatology
    (Oxford) 2009;48:1114-21. The matrix was derived in the methotrexate arm of ASPIRE; rapid
    progression = SvdH change >= 5 units/yr. It crosses three baseline variables of equal
    weight: the 28-joint swollen joint count, CRP (the ESR version replaces CRP by ESR) and
    rheumatoid factor.

    Implementation (this class is also the trial-enrichment selector; keep the interface):

    * categories: ``sjc28`` < 10 / 10-17 / >= 18 (levels 0/1/2); ``crp`` (mg/L) < 6 / 6-29 /
      >= 30 (0.6 and 3 mg/dL); when ``crp`` is missing, ``esr`` (mm/h) < 28 / 28-51 / >= 52;
      ``rf`` negative/positive (0/1; format v1 stores status, not titre, so the published
      titre categories collapse to two). The cut-offs are constructor arguments: check
      them against the paper's figure for your use.
    * the matrix cell's risk is ordinal in the sum of levels (equal weights), 0-5 points. The
      published cell probabilities come from ASPIRE patients on methotrexate and do not
      transfer to other cohorts, so each point total is re-calibrated on the training cohort:
      its expected annual rate (SvdH units/yr) and its probability of rapid progression,
      each by weighted isotonic regression on the points (higher points never get a lower
      risk; sparse cells borrow from their neighbours).
    * ``risk_score`` = the calibrated rate of the patient's points (units/yr), so it ranks
      patients exactly like the matrix; ``p_rapid`` = the calibrated probability of the
      points; ``delta_svdh_pred`` = rate x horizon.
    * a missing input is counted as its lowest category and named in ``note``.

    Baseline erosions are not a matrix input here: the ASPIRE matrix uses non-radiographic
    variables only.
    """

    name = "clinical_matrix"

    def __init__(
        self,
        sjc_cuts: tuple[float, float] = (10.0, 18.0),
        crp_cuts: tuple[float, float] = (6.0, 30.0),
        esr_cuts: tuple[float, float] = (28.0, 52.0),
        interval_level: float = 0.9,
    ) -> None:
        super().__init__(interval_level)
        self.sjc_cuts, self.crp_cuts, self.esr_cuts = sjc_cuts, crp_cuts, esr_cuts

    def points(self, features: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Matrix points 0-5 per row (SJC level + CRP/ESR level + RF) and notes on missing."""
        n = len(features)

        def column(name: str) -> np.ndarray:
            if name not in features.columns:
                return np.full(n, np.nan)
            return pd.to_numeric(features[name], errors="coerce").to_numpy(float)

        sjc, crp, esr = column("sjc28"), column("crp"), column("esr")
        rf = (binary_status(features["rf"]).to_numpy(float) if "rf" in features.columns
              else np.full(n, np.nan))
        inflammation = np.where(np.isfinite(crp), np.digitize(crp, self.crp_cuts),
                                np.digitize(esr, self.esr_cuts))
        inflammation_missing = ~np.isfinite(crp) & ~np.isfinite(esr)
        points = (np.where(np.isfinite(sjc), np.digitize(sjc, self.sjc_cuts), 0)
                  + np.where(inflammation_missing, 0, inflammation)
                  + np.where(np.isfinite(rf), rf, 0))
        notes = []
        for i in range(n):
            missing = [name for name, bad in (("sjc28", not np.isfinite(sjc[i])),
                                              ("crp/esr", inflammation_missing[i]),
                                              ("rf", not np.isfinite(rf[i]))) if bad]
            notes.append(f"matrix input missing ({', '.join(missing)}): lowest category"
                         if missing else "")
        return points.astype(float), notes

    def _fit_rates(self, pairs: pd.DataFrame) -> np.ndarray:
        missing = [c for c in ("sjc28", "rf") if c not in pairs.columns]
        if "crp" not in pairs.columns and "esr" not in pairs.columns:
            missing.append("crp or esr")
        if missing:
            raise ProgressionError(
                f"clinical_matrix needs the covariates {', '.join(missing)} in patients.csv or "
                "visits.csv (sjc28 = swollen joints of 28, crp in mg/L or esr in mm/h, rf 0/1)"
            )
        points, _ = self.points(pairs)
        rates = pairs["rate"].to_numpy(float)
        self.rate_model_ = IsotonicRegression(out_of_bounds="clip").fit(points, rates)
        self.rapid_model_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            points, (rates >= self.rapid_rate_).astype(float)
        )
        return self.rate_model_.predict(points)

    def _predict_rates(self, features: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        points, notes = self.points(features)
        return self.rate_model_.predict(points), notes

    def _p_rapid(self, features: pd.DataFrame, rates: np.ndarray) -> np.ndarray:
        points, _ = self.points(features)
        return self.rapid_model_.predict(points)


# --------------------------------------------------------------------------- (d) covariates
# The tuning budget of every learned baseline that has settings to choose (the same rule for
# each, docs/evaluation.md "Baselines"): at most TUNING_CANDIDATES settings drawn (seeded)
# from its grid, each scored by the mean absolute error of the annual rate in TUNING_FOLDS-fold
# cross-validation on the training cohort, folds grouped by patient. The cohort mean, linear
# extrapolation and the clinical matrix (isotonic re-calibration) have no settings to tune.
TUNING_FOLDS = 3
TUNING_CANDIDATES = 4


class CovariatesModel(Baseline):
    """Gradient boosting (scikit-learn ``GradientBoostingRegressor``) of the annual rate.

    Inputs: static covariates, the last value of each visit covariate, and the past scores
    where present (last SvdH total/erosion/JSN, past rate, number of scored visits, years
    since the last score). Missing values are median-imputed with a missing-indicator column
    (``SimpleImputer(add_indicator=True)``); text covariates are one-hot encoded with the
    categories seen in training. The classic (non-histogram) booster is used because on the
    small tables here it is several times faster than ``HistGradientBoostingRegressor``.

    Tuned like every learned baseline (``TUNING_CANDIDATES`` settings drawn with ``seed`` from
    :attr:`GRID`, ``TUNING_FOLDS``-fold patient-grouped cross-validation on the training
    cohort, lowest MAE of the annual rate wins), so "beats gradient boosting" compares with a
    tuned booster. ``tuning_`` records every candidate's cross-validated MAE (SvdH units/yr)
    and the chosen ``params``, which the final model (refitted on all pairs) uses. The
    residuals for the interval and ``p_rapid`` are the chosen setting's out-of-fold ones from
    that cross-validation (selecting among a few settings on the same folds makes them
    slightly optimistic). A training cohort of one patient cannot be split: the first drawn
    setting is used, with in-sample residuals.
    """

    name = "covariates"
    PAST = ("svdh_last", "svdh_erosion_last", "svdh_jsn_last", "past_rate", "n_scored",
            "years_since_scored")
    GRID = {
        "n_estimators": (50, 150),
        "learning_rate": (0.05, 0.1),
        "max_depth": (2, 3),
        "min_samples_leaf": (5, 20),
        "subsample": (0.8,),
    }

    def __init__(self, seed: int = 0, interval_level: float = 0.9) -> None:
        super().__init__(interval_level)
        self.seed = seed

    def _design(self, features: pd.DataFrame) -> pd.DataFrame:
        frame = pd.DataFrame(index=features.index)
        for column in self.numeric_:
            frame[column] = (pd.to_numeric(features[column], errors="coerce")
                             if column in features.columns else np.nan)
        for column, levels in self.categories_.items():
            values = features[column].astype(str) if column in features.columns else None
            for level in levels:
                frame[f"{column}={level}"] = (
                    (values == level).astype(float) if values is not None else 0.0
                )
        return frame

    def _model(self, params: dict[str, Any]) -> Pipeline:
        return make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True),
            GradientBoostingRegressor(**params, random_state=self.seed),
        )

    def candidates(self) -> list[dict[str, Any]]:
        """The settings tried: ``TUNING_CANDIDATES`` drawn from :attr:`GRID` with ``seed``."""
        return [dict(sorted(c.items())) for c in ParameterSampler(
            self.GRID, n_iter=TUNING_CANDIDATES, random_state=self.seed)]

    def _fit_rates(self, pairs: pd.DataFrame) -> np.ndarray:
        candidates = [c for c in pairs.columns
                      if c not in {"patient_id", "date", "gap_years", "rate"}]
        # Columns never observed in training carry no information (and break the binning).
        candidates = [c for c in candidates if pairs[c].notna().any()]
        self.numeric_ = [c for c in candidates if c not in self.categorical_]
        self.categories_ = {
            c: sorted(pairs[c].dropna().astype(str).unique())
            for c in candidates if c not in self.numeric_
        }
        x, y = self._design(pairs), pairs["rate"].to_numpy(float)
        groups = pairs["patient_id"].to_numpy()
        n_folds = min(TUNING_FOLDS, len(np.unique(groups)))
        settings = self.candidates()
        if n_folds < 2:
            self.tuning_ = {"params": settings[0], "folds": 0, "candidates": []}
            self.model_ = self._model(settings[0]).fit(x, y)
            return self.model_.predict(x)
        folds = GroupKFold(n_splits=n_folds)
        tried = []
        for params in settings:
            fitted = cross_val_predict(self._model(params), x, y, groups=groups, cv=folds)
            tried.append((float(np.mean(np.abs(fitted - y))), params, fitted))
        best = min(range(len(tried)), key=lambda k: tried[k][0])
        cv_mae, params, fitted = tried[best]
        self.tuning_ = {
            "params": params, "folds": n_folds, "cv_mae": cv_mae,
            "candidates": [{"params": p, "cv_mae": score} for score, p, _ in tried],
        }
        log.info("covariates baseline: chose %s (cross-validated MAE %.3f units/yr of %d "
                 "settings)", params, cv_mae, len(tried))
        self.model_ = self._model(params).fit(x, y)
        return fitted

    def _predict_rates(self, features: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        return self.model_.predict(self._design(features)), [""] * len(features)


# --------------------------------------------------------------------------- (e) oracle
class Oracle:
    """The simulator's oracle as a baseline: the best forecast possible from the latent truth.

    Reads ``<cohort>/truth/truth.csv`` through :func:`progression.simulate.oracle.read_truth`
    and :func:`~progression.simulate.oracle.oracle_predictions`, the one reader of the oracle
    (``risk_score`` = expected change / horizon, SvdH units/yr, as for the model). Only
    simulated cohorts have it, and only horizons 1 and 2 years. ``fit`` does nothing.
    """

    name = "oracle"

    def fit(self, train: Any = None) -> Self:
        return self

    def predict(self, cohort: Any, horizons: Sequence[float] = (1.0, 2.0),
                index_dates: Any = None) -> pd.DataFrame:
        tables = load_cohort(cohort)
        if tables.truth_dir is None:
            raise ProgressionError(
                f"the oracle needs a simulated cohort with truth/truth.csv; '{tables.root}' has none"
            )
        truth = read_truth(tables.root)
        missing = [h for h in horizons if float(h) not in oracle_horizons(truth)]
        if missing:
            raise ProgressionError(
                f"{tables.truth_dir / 'truth.csv'} has no oracle_delta_{missing[0]:g}y: the oracle "
                "exists for horizons of 1 and 2 years only; evaluate with --horizons 1,2"
            )
        return oracle_predictions(truth, horizons)


BASELINES: dict[str, type] = {
    "cohort_mean": CohortMean,
    "linear": LinearExtrapolation,
    "clinical_matrix": ClinicalMatrix,
    "covariates": CovariatesModel,
    "oracle": Oracle,
}
DEFAULT_BASELINES = tuple(BASELINES)


def make_baseline(name: str) -> Baseline | Oracle:
    """A fresh baseline by name (one of :data:`BASELINES`)."""
    if name not in BASELINES:
        raise ProgressionError(
            f"unknown baseline '{name}'; choose from {', '.join(BASELINES)}"
        )
    return BASELINES[name]()

