"""Evaluation: outcomes, metrics with bootstrap CIs, baselines, survival, report.

See docs/evaluation.md. The entry point is :func:`evaluate` (in the top-level API
``progression.evaluate_forecasts``: the name ``progression.evaluate`` is this package); the
baselines share one interface (``fit(train_cohort) -> self``,
``predict(cohort, horizons, index_dates)``).
"""

from __future__ import annotations

from progression.data.outcomes import (
    OutcomeRule,
    derive_outcomes,
    landmark_outcomes,
    outcomes_from_truth,
)
from progression.evaluate.baselines import (
    BASELINES,
    DEFAULT_BASELINES,
    ClinicalMatrix,
    CohortMean,
    CovariatesModel,
    LinearExtrapolation,
    Oracle,
    make_baseline,
)
from progression.evaluate.forecasts import training_cohort_of
from progression.evaluate.inputs import (
    OUTCOME_COLUMNS,
    PREDICTION_COLUMNS,
    load_cohort,
    read_outcomes,
    read_predictions,
    read_tables,
)
from progression.evaluate.report import evaluate

__all__ = [
    "BASELINES",
    "DEFAULT_BASELINES",
    "OUTCOME_COLUMNS",
    "PREDICTION_COLUMNS",
    "ClinicalMatrix",
    "CohortMean",
    "CovariatesModel",
    "LinearExtrapolation",
    "Oracle",
    "OutcomeRule",
    "derive_outcomes",
    "evaluate",
    "landmark_outcomes",
    "load_cohort",
    "make_baseline",
    "outcomes_from_truth",
    "read_outcomes",
    "read_predictions",
    "read_tables",
    "training_cohort_of",
]

