"""The shared vocabulary: table columns, their units and the covariates the project knows.

Every stage reads or writes these tables (docs/architecture.md): the cohort's score columns,
the predictions table that ``progression predict``, the baselines and the simulator's oracle
write and ``evaluate``, ``enrich`` and ``explain`` read, and the outcomes table. They live in
one light module (no pandas, no torch) so each name and unit has a single definition that the
simulator, the cohort checks, the model and the reports share.
"""

from __future__ import annotations

from dataclasses import dataclass

# Years in every ``*_years`` column (horizon_years, time_to_event_years) and every time a
# model or a baseline sees are days / DAYS_PER_YEAR.
DAYS_PER_YEAR = 365.25

# Sharp/van der Heijde scores of a visit in visits.csv (SvdH units; empty = not scored).
SCORE_COLUMNS = ("svdh_total", "svdh_erosion", "svdh_jsn")

PREDICTION_COLUMNS = (
    "patient_id",
    "index_date",
    "horizon_years",
    "svdh_index_pred",
    "delta_svdh_pred",
    "delta_svdh_lo",
    "delta_svdh_hi",
    "p_rapid",
    "risk_score",
    "note",
)

OUTCOME_COLUMNS = (
    "patient_id",
    "index_date",
    "horizon_years",
    "delta_svdh_obs",
    "time_to_event_years",
    "event",
)


@dataclass(frozen=True)
class KnownCovariate:
    """A covariate name the clinical baselines, the checks and the reports recognise.

    ``plausible`` (low, high) in ``unit``: a value outside is a validation warning, and the
    column must be numeric. None for covariates that may be text (``rf`` = neg/pos).
    ``words`` are how a 0/1 value reads (binary covariates). ``shown_unit``: the unit written
    after a value in reports when it is not ``unit`` (a count or a score whose ``label``
    already names its scale is shown bare: "Swollen joints (of 28): 5").
    """

    name: str
    label: str
    unit: str = ""
    plausible: tuple[float, float] | None = None
    words: tuple[str, str] | None = None
    shown_unit: str | None = None

    @property
    def report_unit(self) -> str:
        """The unit after a value in reports (explain's covariate effects)."""
        return self.unit if self.shown_unit is None else self.shown_unit


KNOWN_COVARIATES: dict[str, KnownCovariate] = {
    c.name: c
    for c in (
        KnownCovariate("crp", "CRP (C-reactive protein)", "mg/L", (0.0, 300.0)),
        KnownCovariate("esr", "ESR (sedimentation rate)", "mm/h", (0.0, 150.0)),
        KnownCovariate("das28", "DAS28 disease activity", "DAS28 units", (0.0, 10.0), shown_unit=""),
        KnownCovariate("sjc28", "Swollen joints (of 28)", "swollen joints of 28", (0.0, 28.0),
                       shown_unit=""),
        KnownCovariate("tjc28", "Tender joints (of 28)", "tender joints of 28", (0.0, 28.0),
                       shown_unit=""),
        KnownCovariate("haq", "HAQ disability index (0-3)", "HAQ-DI units", (0.0, 3.0),
                       shown_unit=""),
        KnownCovariate("rf", "Rheumatoid factor", words=("negative", "positive")),
        KnownCovariate("acpa", "ACPA (anti-CCP antibodies)", words=("negative", "positive")),
        KnownCovariate("smoker", "Smoker", words=("no", "yes")),
        KnownCovariate("treatment", "Treatment"),
        KnownCovariate("age", "Age", "years", (0.0, 120.0)),
        KnownCovariate("sex", "Sex"),
        # Derived or bookkeeping columns a model may take as covariates (no range check).
        KnownCovariate("age_at_visit", "Age", "years"),  # from birth_date (data.arrays)
        KnownCovariate("site", "Centre"),
    )
}
# 0/1 or neg/pos status covariates (read with evaluate.baselines.binary_status).
BINARY_COVARIATES = tuple(c.name for c in KNOWN_COVARIATES.values() if c.words is not None)
