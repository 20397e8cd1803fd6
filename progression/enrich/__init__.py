"""Trial enrichment: select predicted fast progressors, size the trial, check it by simulation.

Public API (see docs/enrichment.md)::

    from progression.enrich import (SelectionRule, TrialDesign, read_predictions,
                                    load_outcomes, run_enrichment, write_report)
    result = run_enrichment(read_predictions("predictions.csv"), SelectionRule(top_fraction=0.3),
                            TrialDesign(horizon=1, effect=0.5), outcomes=load_outcomes("cohort", 1))
    write_report(result, "enrich_out", {"predictions": "predictions.csv"})

The sample-size formulas are in :mod:`progression.enrich.sample_size`.
"""

from __future__ import annotations

from progression.enrich.analysis import EnrichmentResult, run_enrichment
from progression.enrich.outcomes import Outcomes, load_outcomes
from progression.enrich.plan import TrialDesign
from progression.enrich.report import write_report
from progression.enrich.sample_size import (
    ArmSizes,
    inflate_for_dropout,
    n_two_means,
    n_two_proportions,
)
from progression.enrich.selection import SelectionRule, read_predictions, select

__all__ = [
    "ArmSizes",
    "EnrichmentResult",
    "Outcomes",
    "SelectionRule",
    "TrialDesign",
    "inflate_for_dropout",
    "load_outcomes",
    "n_two_means",
    "n_two_proportions",
    "read_predictions",
    "run_enrichment",
    "select",
    "write_report",
]
