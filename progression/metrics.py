"""Forecast metrics with patient-bootstrap confidence intervals.

Every point estimate comes from the library that defines it (scikit-learn, SciPy, lifelines);
the confidence intervals come from a percentile bootstrap over *patients*. The bootstrap is
vectorised: a resample is a vector of multiplicities ``w`` (how often each patient was drawn),
so ``B`` resamples are a ``(B, n)`` count matrix and each metric is written once as a weighted
statistic over that matrix. The pair-counting statistics (AUROC, AUPRC, Spearman, Harrell's
C) live in :mod:`progression.pairwise`, exact without forming the pairs. 10,000 patients x
1,000 resamples take seconds (``experiments/benchmark_metrics.py``). The libraries take one
weight vector at a time, so these batched forms are hand-written; ``tests/test_metrics.py``
checks that each one with unit weights equals its library counterpart.

Units: changes and scores in SvdH units, horizons and survival times in years, probabilities
in [0, 1].

References
----------
Shrout PE, Fleiss JL. Intraclass correlations: uses in assessing rater reliability.
Psychol Bull 1979;86:420-8 (ICC(2,1): two-way random effects, absolute agreement, one rater).
Harrell FE, Lee KL, Mark DB. Multivariable prognostic models. Stat Med 1996;15:361-87.
Van Calster B, et al. A calibration hierarchy for risk models was defined: from utopia to
empirical data. J Clin Epidemiol 2016;74:167-76 (calibration intercept and slope).
Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall 1993 (percentile CI).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    brier_score_loss,
    mean_absolute_error,
    root_mean_squared_error,
)

from progression.pairwise import (
    auprc,
    auprc_batch,
    auroc,
    auroc_batch,
    c_index,
    c_index_batch,
    spearman,
    spearman_batch,
)

# Predicted probabilities are clipped this far from 0 and 1 before taking logits (recalibration).
_EPS = 1e-6


# --------------------------------------------------------------------------- bootstrap
def bootstrap_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` multiplicities of a patient bootstrap (each row sums to ``n``).

    Row ``b`` says how many times each of the ``n`` patients was drawn in resample ``b``;
    the same seed always gives the same matrix.
    """
    if n == 0:
        return np.zeros((n_boot, 0))
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile-bootstrap 95% interval and the rows it used."""

    value: float
    lo: float
    hi: float
    n: int


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Central percentile interval of bootstrap ``samples``, ignoring undefined (NaN) resamples."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- helpers
def _wmean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted means of ``x`` (n,) under each row of ``w`` (B, n); NaN where a row sums to 0."""
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ x) / total


def _logit(p: np.ndarray) -> np.ndarray:
    return special.logit(np.clip(p, _EPS, 1.0 - _EPS))


# --------------------------------------------------------------------------- regression
def mae(obs: np.ndarray, pred: np.ndarray) -> float:
    """Mean absolute error (SvdH units)."""
    return float(mean_absolute_error(obs, pred))


def mae_batch(obs: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _wmean(np.abs(pred - obs), w)


def rmse(obs: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared error (SvdH units)."""
    return float(root_mean_squared_error(obs, pred))


def rmse_batch(obs: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.sqrt(_wmean((pred - obs) ** 2, w))


def bias(obs: np.ndarray, pred: np.ndarray) -> float:
    """Mean signed error, predicted minus observed (SvdH units; > 0 = over-forecast)."""
    return float(np.mean(pred - obs))


def bias_batch(obs: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _wmean(pred - obs, w)


def calibration_slope_linear(obs: np.ndarray, pred: np.ndarray) -> float:
    """Slope of observed on predicted change (least squares; 1 = well calibrated spread)."""
    if np.ptp(pred) == 0:
        return float("nan")
    return float(stats.linregress(pred, obs).slope)


def calibration_slope_linear_batch(obs: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    total = w.sum(axis=1, keepdims=True)
    mp = (w * pred).sum(axis=1, keepdims=True) / total
    mo = (w * obs).sum(axis=1, keepdims=True) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * (pred - mp) * (obs - mo)).sum(axis=1) / (w * (pred - mp) ** 2).sum(axis=1)


# --------------------------------------------------------------------------- intervals
def coverage(obs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Fraction of observed changes inside the predicted interval [lo, hi] (bounds included)."""
    return float(np.mean((obs >= lo) & (obs <= hi)))


def coverage_batch(obs: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _wmean(((obs >= lo) & (obs <= hi)).astype(float), w)


def width(lo: np.ndarray, hi: np.ndarray) -> float:
    """Mean width of the predicted interval (SvdH units)."""
    return float(np.mean(hi - lo))


def width_batch(lo: np.ndarray, hi: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _wmean(hi - lo, w)


# --------------------------------------------------------------------------- classification
def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Brier score: mean squared difference of p_rapid and the 0/1 outcome (lower is better)."""
    return float(brier_score_loss(y, p))


def brier_batch(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _wmean((p - y) ** 2, w)


def calibration_slope(y: np.ndarray, p: np.ndarray) -> float:
    """Logistic recalibration slope: b in logit P(y) = a + b logit(p) (1 = ideal, < 1 = overfit).

    Unpenalised logistic regression (scikit-learn, ``C=inf``).
    """
    if np.unique(y).size < 2 or np.ptp(p) == 0:
        return float("nan")
    model = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(_logit(p)[:, None], y)
    return float(model.coef_[0, 0])


def calibration_intercept(y: np.ndarray, p: np.ndarray) -> float:
    """Calibration intercept ("in the large"): a in logit P(y) = a + logit(p) (0 = ideal).

    The slope is fixed at 1 (``logit(p)`` as an offset), so ``a`` > 0 means risks are
    under-estimated on average. Solved as the root of the score equation (SciPy ``brentq``).
    """
    if np.unique(y).size < 2:
        return float("nan")
    offset = _logit(p)
    return float(optimize.brentq(lambda a: np.sum(y - special.expit(a + offset)), -30.0, 30.0))


def _newton_logistic(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, fit_slope: bool, iterations: int = 100
) -> np.ndarray:
    """Weighted logistic MLE for every resample: ``(B, 2)`` = (intercept, slope).

    Newton-Raphson with step halving (logits of clipped probabilities can reach +-14, where
    a full Newton step overshoots). Without ``fit_slope`` the slope stays 1 (offset model).
    Resamples that do not converge (separation, one class) are NaN.
    """

    def loglik(theta: np.ndarray) -> np.ndarray:
        eta = theta[:, :1] + theta[:, 1:] * x[None, :]
        return (w * (y * eta - np.logaddexp(0.0, eta))).sum(axis=1)

    n_boot = w.shape[0]
    theta = np.tile([0.0, 1.0], (n_boot, 1))
    current = loglik(theta)
    converged = np.zeros(n_boot, dtype=bool)
    for _ in range(iterations):
        mu = special.expit(theta[:, :1] + theta[:, 1:] * x[None, :])  # (B, n)
        resid = w * (y - mu)
        curv = w * mu * (1.0 - mu)
        h00, g0 = curv.sum(axis=1), resid.sum(axis=1)
        step = np.zeros((n_boot, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            if fit_slope:
                h01, h11, g1 = curv @ x, curv @ (x * x), resid @ x
                det = h00 * h11 - h01**2
                det = np.where(np.abs(det) > 1e-12, det, np.nan)
                step[:, 0] = (h11 * g0 - h01 * g1) / det
                step[:, 1] = (h00 * g1 - h01 * g0) / det
            else:
                step[:, 0] = g0 / np.where(h00 > 1e-12, h00, np.nan)
        step[converged] = 0.0
        alive = np.isfinite(step).all(axis=1) & ~converged
        scale = np.ones(n_boot)
        for _ in range(40):  # halve until the likelihood does not drop
            trial = theta + scale[:, None] * np.where(alive[:, None], step, 0.0)
            value = loglik(trial)
            worse = alive & ~(value >= current - 1e-12)
            if not worse.any():
                break
            scale[worse] /= 2.0
        theta = np.where(alive[:, None], trial, theta)
        current = np.where(alive, value, current)
        converged |= alive & (np.abs(scale[:, None] * step).max(axis=1) < 1e-9)
        if not (alive & ~converged).any():
            break
    theta[~converged] = np.nan
    return theta


def calibration_slope_batch(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _newton_logistic(_logit(p), y.astype(float), w, fit_slope=True)[:, 1]


def calibration_intercept_batch(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _newton_logistic(_logit(p), y.astype(float), w, fit_slope=False)[:, 0]


# --------------------------------------------------------------------------- agreement
def icc_2_1(ratings: np.ndarray) -> float:
    """ICC(2,1) of Shrout & Fleiss: two-way random effects, absolute agreement, one rater.

    ``ratings`` is (n subjects, k raters), here (patients, [given score, predicted score]).
    Absolute agreement is the right question for a scoring head: a constant offset from the
    reader is an error. No scikit-learn/SciPy function gives it, so it is computed from the
    two-way ANOVA mean squares (hand-checked against the published Shrout-Fleiss example).
    """
    return float(_icc_batch(np.asarray(ratings, dtype=float), np.ones((1, len(ratings))))[0])


def _icc_batch(ratings: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ICC(2,1) for every resample; patient i counts ``w[b, i]`` times."""
    k = ratings.shape[1]
    n = w.sum(axis=1)  # (B,)
    row_mean = ratings.mean(axis=1)  # (n,)
    col_mean = (w @ ratings) / n[:, None]  # (B, k)
    grand = col_mean.mean(axis=1)  # (B,)
    ss_rows = k * np.einsum("bi,bi->b", w, (row_mean[None, :] - grand[:, None]) ** 2)
    ss_cols = n * ((col_mean - grand[:, None]) ** 2).sum(axis=1)
    dev = ratings[None, :, :] - grand[:, None, None]  # (B, n, k)
    ss_total = np.einsum("bi,bij->b", w, dev**2)
    ss_err = ss_total - ss_rows - ss_cols
    with np.errstate(invalid="ignore", divide="ignore"):
        ms_r = ss_rows / (n - 1)
        ms_c = ss_cols / (k - 1)
        ms_e = ss_err / ((n - 1) * (k - 1))
        return (ms_r - ms_e) / (ms_r + (k - 1) * ms_e + k * (ms_c - ms_e) / n)


def icc_batch(obs: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _icc_batch(np.stack([obs, pred], axis=1), w)


def icc(obs: np.ndarray, pred: np.ndarray) -> float:
    """ICC(2,1) between the given scores ``obs`` and the predicted scores ``pred``."""
    return icc_2_1(np.stack([obs, pred], axis=1))


# --------------------------------------------------------------------------- survival
# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Metric:
    """One metric: the columns it reads, its library point estimate and its batched bootstrap."""

    name: str
    columns: tuple[str, ...]
    point: Callable[..., float]
    batch: Callable[..., np.ndarray]
    description: str


DELTA_METRICS: tuple[Metric, ...] = (
    Metric("mae_delta", ("delta_svdh_obs", "delta_svdh_pred"), mae, mae_batch,
           "mean absolute error of the predicted change (SvdH units)"),
    Metric("rmse_delta", ("delta_svdh_obs", "delta_svdh_pred"), rmse, rmse_batch,
           "root mean squared error of the predicted change (SvdH units)"),
    Metric("bias_delta", ("delta_svdh_obs", "delta_svdh_pred"), bias, bias_batch,
           "mean predicted minus observed change (SvdH units)"),
    Metric("spearman_delta", ("delta_svdh_obs", "delta_svdh_pred"), spearman, spearman_batch,
           "Spearman correlation of predicted and observed change"),
    Metric("calslope_delta", ("delta_svdh_obs", "delta_svdh_pred"), calibration_slope_linear,
           calibration_slope_linear_batch, "slope of observed on predicted change (ideal 1)"),
    Metric("coverage_delta", ("delta_svdh_obs", "delta_svdh_lo", "delta_svdh_hi"), coverage,
           coverage_batch, "fraction of observed changes inside [lo, hi]"),
    Metric("width_delta", ("delta_svdh_lo", "delta_svdh_hi"), width, width_batch,
           "mean interval width (SvdH units)"),
    Metric("auroc_rapid", ("rapid_obs", "p_rapid"), auroc, auroc_batch,
           "AUROC of p_rapid for rapid progression (>= 5 units/yr)"),
    Metric("auprc_rapid", ("rapid_obs", "p_rapid"), auprc, auprc_batch,
           "average precision of p_rapid for rapid progression"),
    Metric("brier_rapid", ("rapid_obs", "p_rapid"), brier, brier_batch,
           "Brier score of p_rapid (lower is better)"),
    Metric("calslope_rapid", ("rapid_obs", "p_rapid"), calibration_slope,
           calibration_slope_batch, "logistic recalibration slope of p_rapid (ideal 1)"),
    Metric("calintercept_rapid", ("rapid_obs", "p_rapid"), calibration_intercept,
           calibration_intercept_batch, "calibration intercept of p_rapid (ideal 0)"),
)

INDEX_METRICS: tuple[Metric, ...] = (
    Metric("mae_index", ("svdh_index_obs", "svdh_index_pred"), mae, mae_batch,
           "mean absolute error of the current (index) SvdH score"),
    Metric("icc_index", ("svdh_index_obs", "svdh_index_pred"), icc, icc_batch,
           "ICC(2,1), absolute agreement, of predicted vs given index score"),
)

SURVIVAL_METRICS: tuple[Metric, ...] = (
    Metric("cindex_event", ("time_to_event_years", "event", "risk_score"), c_index,
           c_index_batch, "Harrell's C of risk_score for time to progression"),
)


def compute(
    metrics: Sequence[Metric],
    frame: pd.DataFrame,
    counts: np.ndarray,
    patient_index: np.ndarray,
) -> dict[str, Estimate]:
    """Point estimates and bootstrap intervals of ``metrics`` on ``frame``.

    ``frame`` has one row per patient (for one horizon); ``patient_index[r]`` is the column of
    ``counts`` (from :func:`bootstrap_counts` over all patients) for row ``r``, so every
    metric and horizon shares the same patient resamples. Rows missing any column a metric
    reads are left out of that metric only.
    """
    out: dict[str, Estimate] = {}
    for metric in metrics:
        if any(c not in frame.columns for c in metric.columns):
            continue
        values = frame[list(metric.columns)].apply(pd.to_numeric, errors="coerce")
        keep = values.notna().all(axis=1).to_numpy()
        arrays = [values[c].to_numpy(dtype=float)[keep] for c in metric.columns]
        n = int(keep.sum())
        if n < 2:
            out[metric.name] = Estimate(float("nan"), float("nan"), float("nan"), n)
            continue
        value = metric.point(*arrays)
        w = counts[:, patient_index[keep]]
        lo, hi = percentile_interval(np.asarray(metric.batch(*arrays, w), dtype=float))
        out[metric.name] = Estimate(value, lo, hi, n)
    return out


def calibration_table(observed: np.ndarray, predicted: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Binned calibration: deciles (``bins`` quantile groups) of the prediction.

    Columns ``bin, n, predicted_mean, observed_mean``; for p_rapid the observed mean is the
    observed fraction of rapid progressors. Tied predictions share a bin, so there may be
    fewer than ``bins`` rows.
    """
    frame = pd.DataFrame({"observed": observed, "predicted": predicted}).dropna()
    if frame.empty:
        return pd.DataFrame(columns=["bin", "n", "predicted_mean", "observed_mean"])
    ranks = frame["predicted"].rank(method="dense")
    groups = pd.qcut(ranks, q=min(bins, int(ranks.max())), labels=False, duplicates="drop")
    table = frame.groupby(groups).agg(
        n=("observed", "size"),
        predicted_mean=("predicted", "mean"),
        observed_mean=("observed", "mean"),
    )
    table.index.name = "bin"
    return table.reset_index()
