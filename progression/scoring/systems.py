"""Which scoring system a cohort uses: its visit-total column, unit, maximum and thresholds.

The one home for "which system, its maximum and its rapid threshold". A cohort declares its
system in ``cohort.yaml`` (``scoring: larsen``; default ``svdh``); its visit totals are in that
system's units, and so is everything a model trained on it forecasts (the predictions table
keeps its column names, ``delta_svdh_pred`` etc., and the checkpoint records the system).

Inside the pipeline the visit total of either system sits in the column ``svdh_total`` of the
:class:`~progression.cohort.Cohort` (the score the model forecasts); the cohort's
``scoring`` says in which units. Only the files a user writes name the system
(``visits.csv``: ``svdh_total`` or ``larsen_total``).
"""

from __future__ import annotations

from dataclasses import dataclass

from progression.errors import ConfigError
from progression.scoring.larsen import LARSEN_GRADE_MAX, LARSEN_MAX_TOTAL
from progression.scoring.svdh import SVDH_MAX_TOTAL
from progression.scoring.thresholds import (
    DEFAULT_SDC,
    LARSEN_RAPID_RATE,
    LARSEN_SDC,
    RAPID_RATE,
)


@dataclass(frozen=True)
class ScoringSystem:
    """One radiographic scoring system as the pipeline uses it.

    ``total_column``: the visit total's column in visits.csv; ``unit``: how texts name a
    score ("SvdH units"); ``max_total``: the highest total; ``rapid_rate``: rapid
    radiographic progression, in units/year; ``sdc``: default smallest detectable change.
    """

    name: str
    label: str
    total_column: str
    unit: str
    max_total: float
    rapid_rate: float
    sdc: float
    grade_max: int | None = None  # per-joint grade maximum where one grade per joint


SVDH = ScoringSystem("svdh", "Sharp/van der Heijde", "svdh_total", "SvdH units",
                     SVDH_MAX_TOTAL, RAPID_RATE, DEFAULT_SDC)
LARSEN = ScoringSystem("larsen", "Larsen (1995 revision, 32 units)", "larsen_total",
                       "Larsen units", LARSEN_MAX_TOTAL, LARSEN_RAPID_RATE, LARSEN_SDC,
                       grade_max=LARSEN_GRADE_MAX)
SYSTEMS: dict[str, ScoringSystem] = {s.name: s for s in (SVDH, LARSEN)}
DEFAULT_SYSTEM = SVDH.name


def scoring_system(name: str | None) -> ScoringSystem:
    """The system called ``name`` (None: SvdH, what checkpoints without a record used)."""
    key = DEFAULT_SYSTEM if name is None else str(name).strip().lower()
    if key not in SYSTEMS:
        raise ConfigError(f"unknown scoring system '{name}'; use one of {', '.join(SYSTEMS)}")
    return SYSTEMS[key]
