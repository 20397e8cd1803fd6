"""joint_scores.csv (optional): integer grades per joint that add up to the visit total.

SvdH cohorts: columns ``joint, erosion, jsn`` with SvdH joint names. Larsen cohorts
(``scoring: larsen``): columns ``joint, grade``, one 0-5 grade per Larsen unit
(``hand_left_wrist_q1``, ``foot_right_mtp5``, :data:`~progression.scoring.LARSEN_JOINTS`).
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import date

from progression.cohort.cells import Table, parse_number
from progression.cohort.checks.context import CheckContext, VisitKeys
from progression.cohort.format import TOTAL_TOLERANCE
from progression.scoring import JOINTS, LARSEN_JOINTS, aggregate_joint_scores, joint_by_name

LARSEN_JOINT_COLUMNS = ("patient_id", "visit_date", "joint", "grade")


def check_joint_scores(
    ctx: CheckContext, table: Table, visit_keys: VisitKeys | None
) -> list[date | None]:
    """Date per row of joint_scores.csv; names, components and grades checked."""
    ids, dates = ctx.key_cells(table, with_date=True)
    ctx.duplicates(
        table, ["patient_id", "visit_date", "joint"], "joint score (patient / date / joint)"
    )
    erosion = ctx.number_column(table, "erosion")
    jsn = ctx.number_column(table, "jsn")
    for i, name in enumerate(table.frame["joint"].tolist()):
        try:
            joint = joint_by_name(name)
        except KeyError:
            ctx.error(
                table,
                i,
                "joint",
                f"unknown joint '{name}'",
                "use SvdH joint names such as hand_left_mcp2, foot_right_mtp5 (docs/scoring.md)",
            )
            continue
        for column, value, top in (
            ("erosion", erosion[i], joint.erosion_max),
            ("jsn", jsn[i], joint.jsn_max),
        ):
            _check_grade(ctx, table, i, name, column, value, top)
    if visit_keys is not None:
        ctx.rows_without_visit(table, ids, dates, visit_keys)
    return dates


def _check_grade(
    ctx: CheckContext, table: Table, i: int, name: str, column: str, value: float, top
) -> None:
    if math.isnan(value):
        return
    if top is None:
        ctx.error(
            table,
            i,
            column,
            f"joint {name} has no {column} component in SvdH",
            f"leave {column} empty for {name}",
        )
    elif not 0 <= value <= top or not value.is_integer():
        ctx.error(
            table,
            i,
            column,
            f"{value:g} is not an SvdH {column} grade for {name} (0-{top})",
            f"write an integer grade 0-{top}",
        )


def check_joints_match_totals(
    ctx: CheckContext,
    joints: Table,
    visits: Table,
    visit_dates: list[date | None],
    joint_dates: list[date | None],
) -> None:
    """Warn where complete joint scores do not add up to the visit's svdh_total."""
    per_visit = Counter(zip(joints.frame["patient_id"], joint_dates))
    if not visits.has("svdh_total") or max(per_visit.values(), default=0) < len(JOINTS):
        return  # no visit has every joint scored, so no total to compare
    frame = joints.frame[["patient_id", "joint", "erosion", "jsn"]].copy()
    frame["visit_date"] = joint_dates
    for column in ("erosion", "jsn"):
        frame[column] = [parse_number(c)[0] for c in frame[column]]
    totals = aggregate_joint_scores(frame, source=joints.file)
    summed = {
        (p, d): t
        for p, d, t in zip(totals["patient_id"], totals["visit_date"], totals["svdh_total"])
    }
    for i, (pid, day, text) in enumerate(
        zip(visits.frame["patient_id"], visit_dates, visits.frame["svdh_total"])
    ):
        given = parse_number(text)[0]
        total = summed.get((pid, day), math.nan)
        if abs(given - total) > TOTAL_TOLERANCE:  # False when either is NaN
            ctx.warn(
                visits,
                i,
                "svdh_total",
                f"svdh_total {given:g} differs from the sum of joint_scores.csv ({total:g})",
                "correct the visit total or the joint grades",
            )


def check_larsen_joint_scores(
    ctx: CheckContext, table: Table, visits: Table | None, visit_keys: VisitKeys | None
) -> None:
    """Larsen joint_scores.csv: known unit names, integer grades 0-5, sums = larsen_total."""
    system = ctx.scoring
    missing = [c for c in LARSEN_JOINT_COLUMNS if not table.has(c)]
    for column in missing:
        ctx.error(table, None, column, f"required column {column} is missing (Larsen joint "
                  "scores have columns " + ", ".join(LARSEN_JOINT_COLUMNS) + ")",
                  f"add a {column} column to the header (line 1)")
    if missing:
        return
    ids, dates = ctx.key_cells(table, with_date=True)
    ctx.duplicates(table, ["patient_id", "visit_date", "joint"],
                   "joint score (patient / date / joint)")
    names = {j.name for j in LARSEN_JOINTS}
    grades = ctx.number_column(table, "grade")
    sums: dict[tuple[str, date], list[float]] = {}
    for i, (name, grade) in enumerate(zip(table.frame["joint"].tolist(), grades)):
        if name not in names:
            ctx.error(table, i, "joint", f"unknown Larsen unit '{name}'",
                      "use Larsen unit names such as hand_left_mcp2, hand_left_wrist_q1, "
                      "foot_right_mtp5 (docs/scoring.md)")
        elif not math.isnan(grade) and (not 0 <= grade <= system.grade_max
                                        or not grade.is_integer()):
            ctx.error(table, i, "grade", f"{grade:g} is not a Larsen grade for {name}",
                      f"write an integer grade 0-{system.grade_max}")
        elif dates[i] is not None:
            sums.setdefault((ids[i], dates[i]), []).append(grade)
    if visit_keys is not None:
        ctx.rows_without_visit(table, ids, dates, visit_keys)
    if visits is None or not visits.has(system.total_column) or ctx.has_errors(table):
        return
    for (pid, day), values in sums.items():
        row = visit_keys.get((pid, day)) if visit_keys else None
        if row is None or len(values) < len(names) or any(math.isnan(v) for v in values):
            continue  # only a visit with every unit graded has a total to compare
        given = parse_number(visits.frame[system.total_column].iloc[row])[0]
        if abs(given - sum(values)) > 0.5:  # False when the total is empty
            ctx.warn(visits, row, system.total_column,
                     f"{system.total_column} {given:g} differs from the sum of the Larsen "
                     f"grades in joint_scores.csv ({sum(values):g})",
                     "correct the visit total or the joint grades")
