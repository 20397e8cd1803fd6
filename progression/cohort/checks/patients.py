"""patients.csv: one row per patient, an optional birth_date."""

from __future__ import annotations

from datetime import date

from progression.cohort.cells import Table
from progression.cohort.checks.context import CheckContext
from progression.cohort.format import DATE_FIX


def check_patients(ctx: CheckContext, table: Table) -> tuple[dict[str, int], dict[str, date]]:
    """(patient_id -> first row, patient_id -> birth_date) of patients.csv."""
    ids, _ = ctx.key_cells(table, with_date=False)
    ctx.duplicates(table, ["patient_id"], "patient")
    rows: dict[str, int] = {}
    for i, pid in enumerate(ids):
        if pid and pid not in rows:
            rows[pid] = i
    births: dict[str, date] = {}
    if table.has("birth_date"):
        for i, text in enumerate(table.frame["birth_date"].tolist()):
            if not text:
                continue
            value, problem = ctx.date(text)
            if problem:
                ctx.error(table, i, "birth_date", problem, DATE_FIX + ", or leave it empty")
            elif ids[i]:
                births.setdefault(ids[i], value)
    return rows, births


def check_patients_have_visits(
    ctx: CheckContext, patients: Table, patient_rows: dict[str, int], visits: Table
) -> None:
    """Every visit's patient is in patients.csv, and every patient has a visit."""
    visit_rows: dict[str, list[int]] = {}
    for i, pid in enumerate(visits.frame["patient_id"].tolist()):
        if pid:
            visit_rows.setdefault(pid, []).append(i)
    for pid, rows in visit_rows.items():
        if pid not in patient_rows:
            shown = ", ".join(str(visits.lines[i]) for i in rows[:5]) + (
                " ..." if len(rows) > 5 else ""
            )
            ctx.error(
                visits,
                rows[0],
                "patient_id",
                f"patient {pid} (lines {shown}) is not in patients.csv",
                "add the patient to patients.csv or correct the patient_id",
            )
    for pid, i in patient_rows.items():
        if pid not in visit_rows:
            ctx.error(
                patients,
                i,
                "patient_id",
                f"patient {pid} has no visits in visits.csv",
                "add the patient's visits or remove the patient",
            )


def check_patients_have_images(
    ctx: CheckContext, patients: Table, patient_rows: dict[str, int], images: Table
) -> None:
    """A patient without radiographs is usable (covariates only) but worth a warning."""
    with_images = set(images.frame["patient_id"].tolist())
    for pid, i in patient_rows.items():
        if pid not in with_images:
            ctx.warn(
                patients,
                i,
                "patient_id",
                f"patient {pid} has no images",
                "add radiographs to images.csv; without them the forecast uses covariates only",
            )
