"""When two visits measure "a change over h years", and when a past rate is a rate.

One home for the time windows that turn scored visits into changes, so that training pairs,
validation metrics, the baselines' pairs and the landmark outcomes (evaluation and the
interval calibration after a fit) cannot drift apart:

- :data:`ONE_YEAR_METRIC_WINDOW`: validation pairs 0.5-1.5 years apart are "one year"
  (``val/*_1y``); the training pairs themselves span ``data.min_pair_years`` to
  ``data.max_pair_years`` (config) and the model reads the gap as a continuous horizon;
- :data:`BASELINE_PAIR_WINDOW`: the baselines learn a rate per scored visit from the later
  scored visit 0.5-3 years on nearest to one year on;
- :data:`LANDMARK_TOLERANCE_YEARS`: an observed outcome at ``index + h`` is a scored visit
  within 0.25 years of it, its change rescaled to exactly ``h`` years.

A patient's past rate (least-squares slope of observed SvdH totals over time) exists with two
or more observations spread over at least :data:`MIN_RATE_GAP_YEARS` (:func:`slope_defined`):
over shorter gaps a rate is mostly scoring noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from progression.columns import DAYS_PER_YEAR

MIN_RATE_GAP_YEARS = 0.25  # rates over shorter gaps are mostly scoring noise
LANDMARK_TOLERANCE_YEARS = 0.25  # a later visit counts for index + h within this


@dataclass(frozen=True)
class HorizonWindow:
    """Visit pairs ``gap`` years apart with ``min_years <= gap <= max_years`` measure a change
    over ``target_years`` (the pair nearest to it is preferred where one is chosen)."""

    min_years: float
    max_years: float
    target_years: float

    @classmethod
    def around(cls, horizon_years: float, tolerance_years: float) -> HorizonWindow:
        """``horizon_years`` +- ``tolerance_years``."""
        return cls(horizon_years - tolerance_years, horizon_years + tolerance_years, horizon_years)

    def contains(self, gap_years: Any) -> Any:
        """Elementwise: whether each gap (years; a number, array, Series or tensor) is in the window."""
        return (gap_years >= self.min_years) & (gap_years <= self.max_years)

    def distance(self, gap_years: Any) -> Any:
        """How far each gap is from ``target_years`` (years)."""
        return abs(gap_years - self.target_years)


ONE_YEAR_METRIC_WINDOW = HorizonWindow.around(1.0, 0.5)
BASELINE_PAIR_WINDOW = HorizonWindow(0.5, 3.0, 1.0)


def slope_defined(n: Any, denom: Any) -> Any:
    """Whether a least-squares slope over ``n`` observations at times ``t`` (years), with
    ``denom = n * sum(t^2) - sum(t)^2``, is a past rate: two or more observations whose times
    spread by more than :data:`MIN_RATE_GAP_YEARS` (``var(t) > MIN_RATE_GAP_YEARS^2 / n``).
    Elementwise for arrays, Series and tensors."""
    return (n >= 2) & (denom > MIN_RATE_GAP_YEARS**2 * n)


def years_between(start: Any, end: Any) -> Any:
    """Years from ``start`` to ``end`` (timestamps or Series of them), 365.25 days a year."""
    import pandas as pd  # here, so the windows and tolerances above import in no time

    return (pd.to_datetime(end) - pd.to_datetime(start)) / pd.Timedelta(days=DAYS_PER_YEAR)
