"""visits.csv: one row per patient and date, scores in range and consistent over time.

Scores are SvdH (``svdh_total``, ``svdh_erosion``, ``svdh_jsn``) or, in a cohort whose
``cohort.yaml`` says ``scoring: larsen``, the Larsen total ``larsen_total``; each is checked
against its own system's range, and a column of the other system is an error.
"""

from __future__ import annotations

import difflib
import math
from collections import defaultdict
from datetime import date

from progression.cohort.cells import Table, parse_number
from progression.cohort.checks.context import CheckContext, VisitKeys
from progression.cohort.format import SCORE_MAX, TOTAL_TOLERANCE
from progression.columns import SCORE_COLUMNS
from progression.scoring import LARSEN, SVDH


def check_visits(
    ctx: CheckContext, table: Table, births: dict[str, date]
) -> tuple[VisitKeys, list[date | None]]:
    """(visit keys, date per row) of visits.csv, its scores checked."""
    ids, dates = ctx.key_cells(table, with_date=True)
    ctx.duplicates(table, ["patient_id", "visit_date"], "visit (patient / date)")
    keys: VisitKeys = {}
    for i, (pid, day) in enumerate(zip(ids, dates)):
        if not pid or day is None:
            continue
        keys.setdefault((pid, day), i)
        birth = births.get(pid)
        if birth is not None and day < birth:
            ctx.error(
                table,
                i,
                "visit_date",
                f"visit {day.isoformat()} is before the patient's birth_date {birth.isoformat()}",
                "correct the visit_date here or the birth_date in patients.csv",
            )
    if ctx.scoring.name == SVDH.name:
        _check_scores(ctx, table)
    else:
        _check_system_total(ctx, table)
    _refuse_other_system(ctx, table)
    _warn_misnamed_scores(ctx, table)
    return keys, dates


def _check_scores(ctx: CheckContext, table: Table) -> None:
    """Scores in the SvdH range; total = erosion + JSN within the readers' rounding."""
    scores = {c: ctx.number_column(table, c) for c in SCORE_COLUMNS if table.has(c)}
    for column, values in scores.items():
        top = SCORE_MAX[column]
        for i, v in enumerate(values):
            if not math.isnan(v) and not 0 <= v <= top:
                ctx.error(
                    table,
                    i,
                    column,
                    f"{v:g} is outside the SvdH range 0-{top}",
                    f"correct the score (SvdH {column.removeprefix('svdh_')} is 0-{top})",
                )
    if len(scores) == 3:
        for i, (t, e, j) in enumerate(zip(*(scores[c] for c in SCORE_COLUMNS))):
            if not math.isnan(t + e + j) and abs(t - (e + j)) > TOTAL_TOLERANCE:
                ctx.error(
                    table,
                    i,
                    "svdh_total",
                    f"svdh_total {t:g} differs from svdh_erosion + svdh_jsn = {e + j:g}",
                    "correct the scores: total = erosion + JSN",
                )


def _check_system_total(ctx: CheckContext, table: Table) -> None:
    """The visit total of a system with one total column (Larsen) in 0..its maximum."""
    system = ctx.scoring
    column = system.total_column
    if not table.has(column):
        return
    for i, v in enumerate(ctx.number_column(table, column)):
        if not math.isnan(v) and not 0 <= v <= system.max_total:
            ctx.error(table, i, column, f"{v:g} is outside the {system.label} range "
                      f"0-{system.max_total:g}", f"correct the score ({column} is "
                      f"0-{system.max_total:g} {system.unit})")


def _refuse_other_system(ctx: CheckContext, table: Table) -> None:
    """A score column of the system the cohort does not declare: one system per cohort."""
    if ctx.scoring.name == SVDH.name:
        if table.has(LARSEN.total_column):
            ctx.error(table, None, LARSEN.total_column, "Larsen scores in a cohort scored in SvdH",
                      "declare 'scoring: larsen' in cohort.yaml (docs/scoring.md), or remove "
                      "the column")
        return
    for column in SCORE_COLUMNS:
        if table.has(column):
            ctx.error(table, None, column, f"SvdH scores in a cohort that declares scoring: "
                      f"{ctx.scoring.name} (cohort.yaml)",
                      f"give the {ctx.scoring.label} total as {ctx.scoring.total_column}, or "
                      "remove 'scoring' from cohort.yaml for an SvdH cohort")


def _warn_misnamed_scores(ctx: CheckContext, table: Table) -> None:
    for column in table.frame.columns:
        if column.startswith("svdh_") and column not in SCORE_COLUMNS:
            close = difflib.get_close_matches(column, SCORE_COLUMNS, n=1)
            ctx.warn(
                table,
                None,
                column,
                f"column {column} is not a score column"
                + (f" (did you mean {close[0]}?)" if close else "")
                + "; it is read as a covariate",
                f"rename it to one of {', '.join(SCORE_COLUMNS)} if it is a score",
            )


def check_score_decreases(ctx: CheckContext, visits: Table, dates: list[date | None]) -> None:
    """Damage does not heal: a fall larger than the SDC is likely a reading or entry error."""
    system = ctx.scoring
    column = system.total_column
    if not visits.has(column):
        return
    by_patient: dict[str, list[tuple[date, float, int]]] = defaultdict(list)
    for i, (pid, day, text) in enumerate(
        zip(visits.frame["patient_id"], dates, visits.frame[column])
    ):
        score = parse_number(text)[0]
        if day is not None and not math.isnan(score):
            by_patient[pid].append((day, score, i))
    for pid, series in by_patient.items():
        series.sort()
        for (d0, s0, _), (d1, s1, i) in zip(series, series[1:]):
            if s0 - s1 > system.sdc:
                ctx.warn(
                    visits,
                    i,
                    column,
                    f"{column} of patient {pid} falls from {s0:g} ({d0.isoformat()}) to {s1:g} "
                    f"({d1.isoformat()}), more than the smallest detectable change "
                    f"({system.sdc:.3g} {system.unit})",
                    "check both readings; radiographic damage does not usually heal",
                )
