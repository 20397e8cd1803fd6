"""Covariate columns of patients.csv and visits.csv: the one place that types them.

A column is numeric when every recorded value parses as a number (and always for the known
clinical covariates, where text is an error); otherwise it is categorical, with its sorted
distinct values as levels. The result is the cohort's
:class:`~progression.cohort.schema.CohortSchema`, which the data pipeline, the baselines and a
trained model read instead of typing the columns again.
"""

from __future__ import annotations

import math

from progression.cohort.cells import Table, parse_number
from progression.cohort.checks.context import CheckContext
from progression.cohort.format import MAX_LEVELS, PLAUSIBLE_RANGES

# (numeric column -> parsed values, categorical column -> sorted levels)
Covariates = tuple[dict[str, list[float]], dict[str, list[str]]]


def split_covariates(ctx: CheckContext, table: Table, exclude: tuple[str, ...]) -> Covariates:
    """Split the covariate columns of ``table`` into numeric (parsed) and categorical (levels)."""
    numeric: dict[str, list[float]] = {}
    categorical: dict[str, list[str]] = {}
    for column in table.frame.columns:
        if column in exclude:
            continue
        cells = table.frame[column].tolist()
        recorded = [(i, c) for i, c in enumerate(cells) if c]
        parsed = [(i, c, *parse_number(c)) for i, c in recorded]
        text_rows = [(i, c) for i, c, _, problem in parsed if problem and "not a number" in problem]
        if column in PLAUSIBLE_RANGES or not text_rows:
            values = ctx.number_column(table, column)
            numeric[column] = values
            _warn_implausible(ctx, table, column, values)
            continue
        if len(text_rows) <= 0.1 * len(recorded) and len(recorded) >= 10:
            shown = ", ".join(str(table.lines[i]) for i, _ in text_rows[:5])
            ctx.warn(
                table,
                text_rows[0][0],
                column,
                f"column {column} is numeric except {len(text_rows)} cell(s) (lines {shown}, "
                f"e.g. '{text_rows[0][1]}'); it is read as categorical",
                "write numbers in every cell (empty = not recorded) to use it as a number",
            )
        levels = sorted({c for _, c in recorded})
        if len(levels) > MAX_LEVELS and len(levels) > 0.5 * len(recorded):
            ctx.warn(
                table,
                None,
                column,
                f"text column {column} has {len(levels)} distinct values: it looks like free "
                "text or an id, and each value becomes its own category",
                "remove the column or group its values",
            )
        categorical[column] = levels
    return numeric, categorical


def _warn_implausible(ctx: CheckContext, table: Table, column: str, values: list[float]) -> None:
    if column not in PLAUSIBLE_RANGES:
        return
    lo, hi, unit = PLAUSIBLE_RANGES[column]
    for i, v in enumerate(values):
        if not math.isnan(v) and not lo <= v <= hi:
            ctx.warn(
                table,
                i,
                column,
                f"{column} {v:g} is outside the plausible range {lo:g}-{hi:g} {unit}",
                f"check the value and its unit ({unit})",
            )


def check_static_or_per_visit(ctx: CheckContext, visits: Table, static: Covariates) -> None:
    """A covariate is either static (patients.csv) or per visit (visits.csv), not both."""
    for name in [*static[0], *static[1]]:
        if name in visits.frame.columns:
            ctx.error(
                visits,
                None,
                name,
                f"column {name} is also in patients.csv; a covariate must be either "
                "static (patients.csv) or per visit (visits.csv)",
                "rename or remove one of the two",
            )
