"""Conformal calibration of the change forecast's interval (asymmetric CQR).

The model's quantile heads give a central interval ``delta_svdh_lo``-``delta_svdh_hi`` (SvdH
units) that is only nominally at ``interval_level``: quantile regression is often over- or
under-confident, most of all on small cohorts. Conformalised quantile regression (CQR;
Romano, Patterson and Candes, "Conformalized Quantile Regression", NeurIPS 2019) fixes the
coverage on exchangeable data: on a calibration split of patients the model never trained
on, it measures how far each observed change ``y_i`` falls outside the raw interval and
widens (or narrows) the interval by a finite-sample quantile of those misses.

Why asymmetric. The paper's basic rule takes one score ``max(lo_i - y_i, y_i - hi_i)`` and
moves both bounds by the same ``Q``. SvdH change is strongly right-skewed: most patients gain
0-3 units, a few 20-40, and apart from reader noise of a few units the score does not fall.
The largest misses of a calibration split are therefore all above the interval, ``Q`` is set
by them, and the lower bound is dragged just as far below zero: a user saw "+2.7 SvdH units
(90% interval -20.2 to 27.4)". So each side gets its own correction (the paper's asymmetric
variant, its Theorem 2), from the signed misses

    E_lo_i = lo_i - y_i        E_hi_i = y_i - hi_i      (SvdH units; > 0 when y_i is outside)

with ``alpha = 1 - level``: ``Q_lo`` and ``Q_hi`` are each the ``ceil((n + 1) (1 - alpha/2))``-th
smallest of their ``n`` scores (the finite-sample quantile at ``1 - alpha/2``, 0.95 for a 90%
interval). The calibrated interval ``[lo - Q_lo, hi + Q_hi]`` misses below with probability
<= alpha/2 and above with probability <= alpha/2, so it covers a new patient's observed change
with probability >= ``level`` (union bound; the two misses exclude each other, so coverage is
close to ``level``, not conservative). On right-skewed synthetic change (gamma plus reader
noise, median 1.7 units, 5th percentile -0.8, 95th 10.9; a symmetric raw interval -1.3 to 4.7
fitted on 400 patients; ``tests/test_calibration.py``) the symmetric rule gives -4.2 to 7.5
(89.5% coverage of 3000 new patients), the asymmetric one -0.9 to 11.6 (91.3%): the upper
side widens by 6.9 units and the lower side even narrows by 0.5. The price: the rank must
exist on each side, ``ceil((n + 1) (1 - alpha/2)) <= n``, i.e. at least 19 calibration
patients for a 90% interval (the symmetric rule needs 9). Between 9 and 18 the symmetric rule
is used (one ``Q`` on both sides): a fit's validation split often has only a dozen or two
landmark pairs, and a calibrated interval with a low lower bound beats an uncalibrated one
(the 200-patient benchmark's raw 2-year interval covered 78%). A correction can be negative:
an over-wide side gets narrower.

Corrections are computed per forecast horizon (years). With ``scale_by_horizon=True`` all
horizons are pooled with scores divided by the horizon (SvdH units per year) and the correction
is ``(Q_lo h, Q_hi h)``: use it when each horizon has few calibration patients. Either way a
pooled per-year pair is kept so that forecasts at a horizon never seen in calibration still get
a (flagged) calibrated interval.

The state is a small dataclass that round-trips through a plain dict, so it is stored in the
checkpoint next to the model weights (by :func:`progression.train.finalize.calibrate_checkpoint`
after a fit) and applied by ``predict``. This module is the maths only. Checkpoints written before the
asymmetric rule carry ``"method": "cqr"`` with one ``Q`` per horizon; they load as
``Q_lo = Q_hi = Q`` and give exactly the symmetric intervals they gave before.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from progression.errors import ProgressionError

OBSERVED_COLUMN = "delta_svdh_obs"  # observed change in SvdH units (evaluate's outcomes table)
_INTERVAL_COLUMNS = ("horizon_years", "delta_svdh_lo", "delta_svdh_hi")
# (9 + 1) * 0.9 is 9.000000000000002 in floating point (the side rank of an 80% interval);
# the rank is 9
_EPS = 1e-9


class CalibrationError(ProgressionError):
    """Calibration cannot be fitted or applied (too few patients, missing columns, bad state)."""


class Correction(NamedTuple):
    """How far each bound of the raw interval moves outward, in SvdH units (negative: inward).

    The calibrated interval is ``[lo - Correction.lo, hi + Correction.hi]``.
    """

    lo: float
    hi: float

    def scaled(self, factor: float) -> Correction:
        """Both sides times ``factor`` (a per-year correction times the horizon in years)."""
        return Correction(self.lo * factor, self.hi * factor)


def _horizon_key(h: float) -> float:
    # Horizons arrive as floats from CSVs and configs; 1, 1.0 and 1.0000000001 are one horizon.
    return round(float(h), 6)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The finite-sample conformal quantile: the ``ceil((n + 1) * level)``-th smallest score.

    This is the ``ceil((n + 1) * level) / n`` empirical quantile of the ``n`` scores, the
    correction that makes a one-sided split-conformal bound hold with probability >= ``level``
    for exchangeable data. Raises CalibrationError when ``n`` is too small for that rank to exist.
    """
    scores = np.sort(np.asarray(scores, dtype=float))
    n = scores.size
    rank = math.ceil((n + 1) * level - _EPS)
    if rank > n:
        raise CalibrationError(
            f"{n} score(s) are too few for the finite-sample {level:g} quantile (rank {rank})"
        )
    return float(scores[rank - 1])


def min_calibration_patients(level: float) -> int:
    """Fewest calibration rows for a ``level`` interval: ``ceil((n + 1) (1 + level) / 2) <= n``.

    19 for 90%, 39 for 95%, 9 for 80% (``1 - alpha/2 = (1 + level) / 2`` on each side).
    """
    return math.ceil((1.0 + level) / (1.0 - level) - _EPS)


def conformity_scores(
    lo: np.ndarray, hi: np.ndarray, observed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Asymmetric CQR scores ``(lo - y, y - hi)`` in SvdH units: each > 0 when ``y`` is outside
    on that side."""
    lo, hi, observed = (np.asarray(a, dtype=float) for a in (lo, hi, observed))
    return lo - observed, observed - hi


def min_symmetric_patients(level: float) -> int:
    """Fewest calibration rows for the symmetric rule: ``ceil((n + 1) level) <= n`` (9 for 90%)."""
    return math.ceil(level / (1.0 - level) - _EPS)


def interval_correction(
    lo: np.ndarray, hi: np.ndarray, observed: np.ndarray, level: float,
    allow_symmetric: bool = True,
) -> Correction:
    """``(Q_lo, Q_hi)``: the ``(1 + level) / 2`` conformal quantile of each side's scores.

    With fewer rows than that needs (:func:`min_calibration_patients`, 19 for 90%) but enough
    for the symmetric rule (:func:`min_symmetric_patients`, 9), the symmetric CQR correction
    ``Q`` of ``max(lo - y, y - hi)`` goes on both sides: a lower bound further below zero than
    it needs to be, but a calibrated interval, where a 45-patient validation split with a
    dozen landmark pairs would otherwise leave the interval uncalibrated. Fewer still (or
    fewer than 19 with ``allow_symmetric`` False): a CalibrationError naming how many
    calibration patients are needed.
    """
    n = np.asarray(observed).size
    e_lo, e_hi = conformity_scores(lo, hi, observed)
    if n >= min_calibration_patients(level):
        side = (1.0 + level) / 2.0
        return Correction(conformal_quantile(e_lo, side), conformal_quantile(e_hi, side))
    need = min_symmetric_patients(level) if allow_symmetric else min_calibration_patients(level)
    if n < need:
        raise CalibrationError(
            f"only {n} calibration patient(s); a {level:.0%} conformal interval needs at least "
            f"{need} (one correction for both sides; {min_calibration_patients(level)} for "
            "separate lower and upper corrections). fit calibrates on its calibration patients, "
            "data.calibration_share of the validation split (data.val_fraction): raise either "
            "or lower the interval level."
        )
    q = conformal_quantile(np.maximum(e_lo, e_hi), level)
    return Correction(q, q)


def _symmetric(value: object) -> Correction:
    # "cqr" states (before the asymmetric rule) hold one Q per horizon, applied to both sides.
    return Correction(float(value), float(value))


def _asymmetric(value: dict) -> Correction:
    return Correction(float(value["lo"]), float(value["hi"]))


# stored "method" -> reader of one stored correction
_READERS = {"cqr": _symmetric, "cqr-asymmetric": _asymmetric}
METHOD = "cqr-asymmetric"


@dataclass
class ConformalCalibration:
    """Fitted CQR corrections, stored with the model and applied to every forecast.

    ``corrections`` maps a horizon (years) to its :class:`Correction` in SvdH units
    (``scale_by_horizon`` False) or is empty (``scale_by_horizon`` True, where ``per_year`` is
    used for every horizon). ``per_year`` is the pooled correction in SvdH units per year of
    horizon; it also covers horizons that were not in the calibration split. ``n_calibration``
    counts the calibration patients per horizon.
    """

    level: float
    scale_by_horizon: bool
    per_year: Correction
    corrections: dict[float, Correction] = field(default_factory=dict)
    n_calibration: dict[float, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON/YAML/torch.save-safe dict (horizon keys as strings)."""
        return {
            "method": METHOD,
            "level": self.level,
            "scale_by_horizon": self.scale_by_horizon,
            "per_year": self.per_year._asdict(),
            "corrections": {str(h): q._asdict() for h, q in self.corrections.items()},
            "n_calibration": {str(h): n for h, n in self.n_calibration.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> ConformalCalibration:
        """Inverse of :meth:`to_dict`; also reads the older symmetric ``"cqr"`` state (one ``Q``
        per horizon, used on both sides). A damaged state raises CalibrationError."""
        try:
            method = data.get("method", "cqr")  # the first stored states had no method
            if method not in _READERS:
                raise ValueError(f"unknown method {method!r}")
            read = _READERS[method]
            return cls(
                level=float(data["level"]),
                scale_by_horizon=bool(data["scale_by_horizon"]),
                per_year=read(data["per_year"]),
                corrections={_horizon_key(h): read(q) for h, q in data["corrections"].items()},
                n_calibration={_horizon_key(h): int(n) for h, n in data["n_calibration"].items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(
                f"stored conformal calibration is unreadable ({exc}); refit the model or "
                "recalibrate it with progression.calibration.fit_conformal"
            ) from None

    def correction_for(self, horizon_years: float) -> tuple[Correction, bool]:
        """``(Correction in SvdH units, extrapolated)`` for one horizon; extrapolated = horizon
        not calibrated."""
        key = _horizon_key(horizon_years)
        if not self.scale_by_horizon and key in self.corrections:
            return self.corrections[key], False
        return self.per_year.scaled(float(horizon_years)), key not in self.n_calibration

    def apply(self, predictions: pd.DataFrame) -> pd.DataFrame:
        """A copy of a predictions table with calibrated ``delta_svdh_lo`` / ``delta_svdh_hi``.

        Where (negative) corrections would cross the bounds, both become their midpoint.
        Rows at a horizon outside the calibration split get a note saying the interval was
        extrapolated.
        """
        _require_columns(predictions, _INTERVAL_COLUMNS, "predictions table")
        out = predictions.copy()
        pairs = [self.correction_for(h) for h in out["horizon_years"]]
        q = np.array([p[0] for p in pairs], dtype=float).reshape(-1, 2)
        lo = out["delta_svdh_lo"].to_numpy(dtype=float) - q[:, 0]
        hi = out["delta_svdh_hi"].to_numpy(dtype=float) + q[:, 1]
        crossed = lo > hi
        mid = (lo + hi) / 2.0
        out["delta_svdh_lo"] = np.where(crossed, mid, lo)
        out["delta_svdh_hi"] = np.where(crossed, mid, hi)
        extrapolated = np.array([p[1] for p in pairs], dtype=bool)
        return with_note(out, extrapolated,
                         "interval calibrated by extrapolation from other horizons")


def with_note(frame: pd.DataFrame, rows: np.ndarray, text: str) -> pd.DataFrame:
    """``frame`` with ``text`` appended (``"; "``-separated) to the ``note`` of ``rows`` (a
    boolean mask); the frame itself when no row is flagged."""
    rows = np.asarray(rows, dtype=bool)
    if not rows.any():
        return frame
    out = frame.copy()
    notes = out["note"].fillna("").astype(str) if "note" in out else pd.Series("", out.index)
    out["note"] = [(f"{n}; {text}" if n else text) if flag else n
                   for n, flag in zip(notes, rows)]
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
    allow_symmetric: bool = True,
) -> ConformalCalibration:
    """Fit asymmetric CQR corrections (one per side of the interval) on a calibration split.

    Parameters
    ----------
    frame
        Predictions for patients the model did not train on, one row per patient x horizon,
        with ``horizon_years``, ``delta_svdh_lo``, ``delta_svdh_hi`` and the observed change
        ``observed`` (SvdH units). Rows without an observed change are ignored.
    level
        Nominal coverage of the calibrated interval (0.9 = 90%).
    scale_by_horizon
        Pool all horizons, scores in SvdH units per year; else one correction per horizon
        (each horizon then needs :func:`min_symmetric_patients` rows, 9 for 90%, and
        :func:`min_calibration_patients`, 19, for separate lower and upper corrections).
    allow_symmetric
        Use one symmetric correction where there are too few rows for separate ones (see
        :func:`interval_correction`); False raises CalibrationError instead.

    References
    ----------
    Romano Y, Patterson E, Candes E. Conformalized Quantile Regression. NeurIPS 2019
    (asymmetric conformity scores, Theorem 2).
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
    lo, hi, y = (data[c].to_numpy(dtype=float) for c in ("delta_svdh_lo", "delta_svdh_hi", observed))
    per_year = interval_correction(lo / horizons, hi / horizons, y / horizons, level,
                                   allow_symmetric)
    keys = np.array([_horizon_key(h) for h in horizons])
    n_calibration = {float(h): int((keys == h).sum()) for h in np.unique(keys)}
    corrections = (
        {}
        if scale_by_horizon
        else {h: interval_correction(lo[keys == h], hi[keys == h], y[keys == h], level,
                                     allow_symmetric)
              for h in n_calibration}
    )
    return ConformalCalibration(
        level=level,
        scale_by_horizon=scale_by_horizon,
        per_year=per_year,
        corrections=corrections,
        n_calibration=n_calibration,
    )


def fit_preferred(frame: pd.DataFrame, level: float) -> ConformalCalibration:
    """:func:`fit_conformal` with the best rule the calibration rows allow, tried in order:
    separate lower and upper corrections per horizon, the same pooled over horizons, one
    symmetric correction per horizon, pooled. Raises the last CalibrationError if none fits.
    """
    error = None
    for symmetric, pooled in ((False, False), (False, True), (True, False), (True, True)):
        try:
            return fit_conformal(frame, level=level, scale_by_horizon=pooled,
                                 allow_symmetric=symmetric)
        except CalibrationError as exc:
            error = exc
    raise error


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
