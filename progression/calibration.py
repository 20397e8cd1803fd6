"""Conformal calibration of the change forecast's interval (CQR).

The model's quantile heads give a central interval ``delta_svdh_lo``-``delta_svdh_hi`` (SvdH
units) that is only nominally at ``interval_level``: quantile regression is often over- or
under-confident, most of all on small cohorts. Conformalised quantile regression (CQR;
Romano, Patterson and Candes, "Conformalized Quantile Regression", NeurIPS 2019) fixes the
coverage on exchangeable data with one number per horizon: on a calibration split of patients
the model never trained on, each patient's conformity score is

    E_i = max(lo_i - y_i, y_i - hi_i)      (SvdH units; > 0 when y_i falls outside)

and the correction ``Q`` is the ``ceil((n + 1) * level)``-th smallest score (the finite-sample
quantile). The calibrated interval ``[lo - Q, hi + Q]`` then covers a new patient's observed
change with probability >= ``level``. ``Q`` can be negative: over-wide intervals get narrower.

Corrections are computed per forecast horizon (years). With ``scale_by_horizon=True`` all
horizons are pooled with scores divided by the horizon (SvdH units per year) and the correction
is ``Q * h``: use it when each horizon has few calibration patients. Either way a pooled
per-year correction is kept so that forecasts at a horizon never seen in calibration still get
a (flagged) calibrated interval.

The state is a small dataclass that round-trips through a plain dict, so it is stored in the
checkpoint next to the model weights and applied by ``predict``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from progression.errors import ProgressionError

if TYPE_CHECKING:
    from progression.cohort import Cohort

logger = logging.getLogger(__name__)

OBSERVED_COLUMN = "delta_svdh_obs"  # observed change in SvdH units (evaluate's outcomes table)
_INTERVAL_COLUMNS = ("horizon_years", "delta_svdh_lo", "delta_svdh_hi")
_EPS = 1e-9  # (9 + 1) * 0.9 is 9.000000000000002 in floating point; the rank is 9


class CalibrationError(ProgressionError):
    """Calibration cannot be fitted or applied (too few patients, missing columns, bad state)."""


def _horizon_key(h: float) -> float:
    # Horizons arrive as floats from CSVs and configs; 1, 1.0 and 1.0000000001 are one horizon.
    return round(float(h), 6)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The finite-sample conformal quantile: the ``ceil((n + 1) * level)``-th smallest score.

    This is the ``ceil((n + 1) * level) / n`` empirical quantile of the ``n`` scores, the
    correction that makes split-conformal coverage >= ``level`` for exchangeable data.
    Raises CalibrationError when ``n`` is too small for that rank to exist.
    """
    scores = np.sort(np.asarray(scores, dtype=float))
    n = scores.size
    rank = math.ceil((n + 1) * level - _EPS)
    if rank > n:
        need = math.ceil(level / (1.0 - level) - _EPS)
        raise CalibrationError(
            f"only {n} calibration patient(s); a {level:.0%} conformal interval needs at least "
            f"{need}. Use a larger calibration (validation) split or a lower interval level."
        )
    return float(scores[rank - 1])


def conformity_scores(lo: np.ndarray, hi: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """CQR scores ``max(lo - y, y - hi)`` in SvdH units: positive when ``y`` is outside."""
    lo, hi, observed = (np.asarray(a, dtype=float) for a in (lo, hi, observed))
    return np.maximum(lo - observed, observed - hi)


@dataclass
class ConformalCalibration:
    """Fitted CQR corrections, stored with the model and applied to every forecast.

    ``corrections`` maps a horizon (years) to ``Q`` in SvdH units (``scale_by_horizon`` False)
    or is empty (``scale_by_horizon`` True, where ``per_year`` is used for every horizon).
    ``per_year`` is the pooled correction in SvdH units per year of horizon; it also covers
    horizons that were not in the calibration split. ``n_calibration`` counts the calibration
    patients per horizon.
    """

    level: float
    scale_by_horizon: bool
    per_year: float
    corrections: dict[float, float] = field(default_factory=dict)
    n_calibration: dict[float, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON/YAML/torch.save-safe dict (horizon keys as strings)."""
        return {
            "method": "cqr",
            "level": self.level,
            "scale_by_horizon": self.scale_by_horizon,
            "per_year": self.per_year,
            "corrections": {str(h): q for h, q in self.corrections.items()},
            "n_calibration": {str(h): n for h, n in self.n_calibration.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> ConformalCalibration:
        """Inverse of :meth:`to_dict`; a damaged state raises CalibrationError."""
        try:
            if data.get("method", "cqr") != "cqr":
                raise ValueError(f"unknown method {data['method']!r}")
            return cls(
                level=float(data["level"]),
                scale_by_horizon=bool(data["scale_by_horizon"]),
                per_year=float(data["per_year"]),
                corrections={_horizon_key(h): float(q) for h, q in data["corrections"].items()},
                n_calibration={_horizon_key(h): int(n) for h, n in data["n_calibration"].items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(
                f"stored conformal calibration is unreadable ({exc}); refit the model or "
                "recalibrate it with progression.calibration.fit_conformal"
            ) from None

    def correction_for(self, horizon_years: float) -> tuple[float, bool]:
        """``(Q in SvdH units, extrapolated)`` for one horizon; extrapolated = horizon not calibrated."""
        key = _horizon_key(horizon_years)
        if not self.scale_by_horizon and key in self.corrections:
            return self.corrections[key], False
        return self.per_year * float(horizon_years), key not in self.n_calibration

    def apply(self, predictions: pd.DataFrame) -> pd.DataFrame:
        """A copy of a predictions table with calibrated ``delta_svdh_lo`` / ``delta_svdh_hi``.

        Where a (negative) correction would cross the bounds, both become their midpoint.
        Rows at a horizon outside the calibration split get a note saying the interval was
        extrapolated.
        """
        _require_columns(predictions, _INTERVAL_COLUMNS, "predictions table")
        out = predictions.copy()
        pairs = [self.correction_for(h) for h in out["horizon_years"]]
        q = np.array([p[0] for p in pairs], dtype=float)
        lo = out["delta_svdh_lo"].to_numpy(dtype=float) - q
        hi = out["delta_svdh_hi"].to_numpy(dtype=float) + q
        crossed = lo > hi
        mid = (lo + hi) / 2.0
        out["delta_svdh_lo"] = np.where(crossed, mid, lo)
        out["delta_svdh_hi"] = np.where(crossed, mid, hi)
        extrapolated = np.array([p[1] for p in pairs], dtype=bool)
        if extrapolated.any():
            text = "interval calibrated by extrapolation from other horizons"
            notes = out["note"].fillna("").astype(str) if "note" in out else pd.Series("", out.index)
            out["note"] = [
                (f"{n}; {text}" if n else text) if ex else n
                for n, ex in zip(notes, extrapolated)
            ]
        return out


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CalibrationError(
            f"{what} lacks column(s) {', '.join(missing)}; it needs "
            f"{', '.join(columns)} (predictions table + observed change)"
        )


def fit_conformal(
    frame: pd.DataFrame,
    level: float = 0.9,
    scale_by_horizon: bool = False,
    observed: str = OBSERVED_COLUMN,
) -> ConformalCalibration:
    """Fit CQR corrections on a calibration split.

    Parameters
    ----------
    frame
        Predictions for patients the model did not train on, one row per patient x horizon,
        with ``horizon_years``, ``delta_svdh_lo``, ``delta_svdh_hi`` and the observed change
        ``observed`` (SvdH units). Rows without an observed change are ignored.
    level
        Nominal coverage of the calibrated interval (0.9 = 90%).
    scale_by_horizon
        Pool all horizons, scores in SvdH units per year; else one correction per horizon.

    References
    ----------
    Romano Y, Patterson E, Candes E. Conformalized Quantile Regression. NeurIPS 2019.
    """
    if not 0.0 < level < 1.0:
        raise CalibrationError(f"interval level must be between 0 and 1, got {level}")
    _require_columns(frame, (*_INTERVAL_COLUMNS, observed), "calibration table")
    data = frame.dropna(subset=[*_INTERVAL_COLUMNS, observed])
    if data.empty:
        raise CalibrationError(
            f"calibration table has no row with both an interval and an observed '{observed}'"
        )
    horizons = data["horizon_years"].to_numpy(dtype=float)
    scores = conformity_scores(data["delta_svdh_lo"], data["delta_svdh_hi"], data[observed])
    per_year = conformal_quantile(scores / horizons, level)
    keys = np.array([_horizon_key(h) for h in horizons])
    n_calibration = {float(h): int((keys == h).sum()) for h in np.unique(keys)}
    corrections = (
        {}
        if scale_by_horizon
        else {h: conformal_quantile(scores[keys == h], level) for h in n_calibration}
    )
    return ConformalCalibration(
        level=level,
        scale_by_horizon=scale_by_horizon,
        per_year=per_year,
        corrections=corrections,
        n_calibration=n_calibration,
    )


def damage_tertile(svdh: pd.Series) -> pd.Series:
    """Baseline damage tertile (``low`` / ``middle`` / ``high``) of SvdH scores.

    Ranks break ties first, so a cohort where a third of patients have a score of 0 still
    gets three equal groups.
    """
    ranks = svdh.rank(method="first")
    labels = pd.qcut(ranks, 3, labels=["low", "middle", "high"])
    return labels.astype(str).where(svdh.notna())


def empirical_coverage(
    frame: pd.DataFrame,
    by: Sequence[str] = (),
    observed: str = OBSERVED_COLUMN,
) -> pd.DataFrame:
    """Observed coverage and mean width of the forecast interval, overall and by subgroup.

    ``frame`` holds predictions joined with the observed change (and any subgroup columns,
    e.g. ``sex``, ``site``, or :func:`damage_tertile` of ``svdh_index_pred``). Returns one row
    per horizon for the whole table (``subgroup`` = ``all``) and per horizon x level of each
    column in ``by``: ``subgroup, level, horizon_years, n, coverage (0-1), mean_width``
    (SvdH units).
    """
    _require_columns(frame, (*_INTERVAL_COLUMNS, observed, *by), "coverage table")
    data = frame.dropna(subset=[*_INTERVAL_COLUMNS, observed]).copy()
    y = data[observed].to_numpy(dtype=float)
    data["_covered"] = (data["delta_svdh_lo"].to_numpy(dtype=float) <= y) & (
        y <= data["delta_svdh_hi"].to_numpy(dtype=float)
    )
    data["_width"] = data["delta_svdh_hi"] - data["delta_svdh_lo"]
    data["_all"] = "all"
    rows = []
    for column in ("_all", *by):
        grouped = data.groupby([column, "horizon_years"], dropna=True, observed=True)
        for (value, horizon), group in grouped:
            rows.append(
                {
                    "subgroup": "all" if column == "_all" else column,
                    "level": str(value),
                    "horizon_years": float(horizon),
                    "n": len(group),
                    "coverage": float(group["_covered"].mean()),
                    "mean_width": float(group["_width"].mean()),
                }
            )
    columns = ["subgroup", "level", "horizon_years", "n", "coverage", "mean_width"]
    return pd.DataFrame(rows, columns=columns)


def calibrate_checkpoint(
    checkpoint: str | Path,
    cohort: Cohort,
    patient_ids: Sequence[str],
    horizons: Sequence[float] = (1.0, 2.0),
    level: float | None = None,
    tolerance_years: float = 0.25,
    cache_dir: str | Path | None = None,
) -> ConformalCalibration | None:
    """Fit CQR on held-out patients and store it in the checkpoint file (atomically).

    ``patient_ids`` must be patients the model did not train on (``fit`` passes its validation
    split). Their observed changes are landmark outcomes from their own scored visits
    (:func:`progression.evaluate.outcomes.landmark_outcomes`: a scored, imaged index visit and
    a scored visit ``h`` +- ``tolerance_years`` later); forecasts are made from the history up
    to that index. One correction per horizon where every horizon has enough patients, else
    horizons pooled per year; with too few patients nothing is stored (a warning says so)
    and the interval stays uncalibrated. ``level`` defaults to the model's interval level.
    """
    import torch

    from progression.evaluate.outcomes import OutcomeRule, landmark_outcomes
    from progression.evaluate.tables import load_cohort
    from progression.io import atomic_open
    from progression.models.checkpoint import read_checkpoint
    from progression.predict import predict_cohort

    ckpt = read_checkpoint(checkpoint)
    level = float(level if level is not None else ckpt["progression"]["config"]["model"]["interval_level"])
    held_out = cohort.subset(patient_ids)
    rule = OutcomeRule(horizons=tuple(float(h) for h in horizons), tolerance_years=tolerance_years)
    outcomes = landmark_outcomes(load_cohort(held_out), rule).dropna(subset=[OBSERVED_COLUMN])
    calibration = None
    if not outcomes.empty:
        index = outcomes.drop_duplicates("patient_id")[["patient_id", "index_date"]]
        predictions = predict_cohort(
            checkpoint, held_out.subset(index["patient_id"]), horizons=rule.horizons,
            index_dates=index, progress=False, cache_dir=cache_dir, calibrate=False,
        )
        table = predictions.merge(
            outcomes[["patient_id", "horizon_years", OBSERVED_COLUMN]],
            on=["patient_id", "horizon_years"],
        )
        for pooled in (False, True):
            try:
                calibration = fit_conformal(table, level=level, scale_by_horizon=pooled)
                break
            except CalibrationError as exc:
                reason = str(exc)
    else:
        reason = "no held-out patient has a scored visit about 1-2 years after a scored, imaged one"
    if calibration is None:
        logger.warning("%s: interval not calibrated (%s)", Path(checkpoint).name, reason)
        return None
    ckpt["progression"]["calibration"] = calibration.to_dict()
    with atomic_open(checkpoint, "wb") as handle:
        torch.save(ckpt, handle)
    logger.info("%s: conformal calibration on %s patient-horizons, corrections %s",
                Path(checkpoint).name, sum(calibration.n_calibration.values()),
                calibration.corrections or f"{calibration.per_year:.2f} units/yr")
    return calibration
