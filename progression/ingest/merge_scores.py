"""Merge reader scores from a sheet into a copy of a cohort (the cohort is only read).

The new cohort is the old one with ``joint_scores.csv`` and/or the score columns of
``visits.csv`` updated. Every other file (images included) is carried over unchanged,
as a hard link where the file system allows it (no extra space; the images are never
written to) or else as a copy, so every path in images.csv resolves inside the new
cohort exactly as before. Symbolic links are carried as links.

Merge rules: a grade in the sheet replaces the cohort's grade of the same joint,
component and visit; other grades stay. A visit whose joints the sheet grades gets its
``svdh_*`` totals recomputed from the merged grades when every joint is graded, unless
the sheet gives that visit's totals itself, which then win.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from progression.cohort.format import JOINT_SCORES, PATIENTS, VISITS
from progression.cohort.reading import read_cohort
from progression.columns import SCORE_COLUMNS
from progression.errors import CohortError, ConfigError
from progression.ingest.joint_map import load_joint_map
from progression.ingest.outdir import building
from progression.ingest.score_sheet import SheetScores, parse_scores, read_sheet
from progression.io import atomic_write_csv
from progression.scoring import aggregate_joint_scores


@dataclass
class ScoreImportResult:
    """Counts for the summary of an import."""

    out: Path
    source: str
    form: str
    n_grades: int
    n_visits_scored: int
    n_totals_given: int
    n_totals_computed: int
    skipped_joints: list[str]

    def summary(self) -> str:
        lines = [
            f"read {self.source} ({self.form} form): {self.n_grades} joint grades for "
            f"{self.n_visits_scored} visit(s), {self.n_totals_given} visit totals",
            f"wrote {self.out}: joint_scores.csv and visits.csv updated; "
            f"{self.n_totals_computed} visit totals computed from complete joint grades",
        ]
        if self.skipped_joints:
            lines.append(f"skipped unknown joints: {', '.join(self.skipped_joints)}")
        lines.append(f"next: progression validate {self.out}")
        return "\n".join(lines)


def _read_text_table(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    frame = frame.rename(columns=lambda c: str(c).strip())
    return frame.apply(lambda col: col.str.strip())


def _hardlink_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _format(value: float) -> str:
    return "" if pd.isna(value) else f"{value:g}"


def import_scores(
    file: str | Path,
    cohort: str | Path,
    out: str | Path,
    *,
    joint_map: str | Path | None = None,
    ignore_unknown_joints: bool = False,
    sheet: str | None = None,
    overwrite: bool = False,
) -> ScoreImportResult:
    """Write ``out``: ``cohort`` plus the grades of ``file`` (CSV or .xlsx).

    Raises :class:`CohortError` (bad sheet rows, unknown patients or visits, a merged
    cohort that would not read) or :class:`ConfigError` (bad paths, bad joint map)
    before anything is written.
    """
    cohort, out = Path(cohort), Path(out)
    _check_paths(cohort, out)
    read_cohort(cohort)  # the input must be a valid cohort (raises CohortError listing why)
    names = load_joint_map(joint_map)
    frame, source = read_sheet(file, sheet)
    scores = parse_scores(frame, source, names, ignore_unknown_joints)
    visits = _read_text_table(cohort / VISITS)
    _check_rows_match_visits(scores, cohort, visits, source)
    joint_table = _merged_joint_scores(cohort, scores.joints)
    touched = set(zip(scores.joints["patient_id"], scores.joints["visit_date"], strict=True))
    given = set(zip(scores.totals["patient_id"], scores.totals["visit_date"], strict=True))
    visits, computed = _merged_visit_totals(visits, joint_table, scores.totals, touched - given)
    _write_merged_cohort(cohort, out, overwrite, visits, joint_table, source)
    return ScoreImportResult(
        out=out,
        source=source,
        form=scores.form,
        n_grades=len(scores.joints),
        n_visits_scored=len(touched),
        n_totals_given=len(given),
        n_totals_computed=computed,
        skipped_joints=scores.skipped,
    )


def _check_paths(cohort: Path, out: Path) -> None:
    cohort_abs, out_abs = cohort.resolve(), out.resolve()
    if out_abs == cohort_abs or cohort_abs in out_abs.parents or out_abs in cohort_abs.parents:
        raise ConfigError(
            f"--out {out} and --cohort {cohort} overlap; import-scores never writes into the "
            "cohort: give a new directory outside it"
        )


def _check_rows_match_visits(
    scores: SheetScores, cohort: Path, visits: pd.DataFrame, source: str
) -> None:
    """Every graded (patient, visit) of the sheet must be a visit of the cohort."""
    patients = set(_read_text_table(cohort / PATIENTS)["patient_id"])
    visit_keys = set(zip(visits["patient_id"], visits["visit_date"], strict=True))
    problems = []
    for table in (scores.joints, scores.totals):
        for r in table.drop_duplicates(["patient_id", "visit_date"]).itertuples(index=False):
            if r.patient_id not in patients:
                problems.append(f"{r.row}: patient '{r.patient_id}' is not in {cohort / PATIENTS}"
                                "; correct the id or add the patient to the cohort first")  # fmt: skip
            elif (r.patient_id, r.visit_date) not in visit_keys:
                dates = sorted(d for p, d in visit_keys if p == r.patient_id)
                problems.append(
                    f"{r.row}: patient '{r.patient_id}' has no visit on {r.visit_date} in "
                    f"{cohort / VISITS} (its visits: {', '.join(dates)}); correct the date"
                )
    if problems:
        shown = "\n  ".join(sorted(set(problems))[:20])
        raise CohortError(f"{source}: rows that match no visit of the cohort; nothing was "
                          f"written\n  {shown}")  # fmt: skip


def _merged_joint_scores(cohort: Path, sheet_joints: pd.DataFrame) -> pd.DataFrame:
    """The cohort's joint grades with the sheet's, per joint and component: the sheet's win."""
    key = ["patient_id", "visit_date", "joint"]
    if (cohort / JOINT_SCORES).exists():
        old = _read_text_table(cohort / JOINT_SCORES)[[*key, "erosion", "jsn"]]
    else:
        old = pd.DataFrame(columns=[*key, "erosion", "jsn"])
    merged = {tuple(r[:3]): {"erosion": r[3], "jsn": r[4]} for r in old.itertuples(index=False)}
    for r in sheet_joints.itertuples(index=False):
        merged.setdefault((r.patient_id, r.visit_date, r.joint), {"erosion": "", "jsn": ""})[
            r.component
        ] = _format(r.grade)
    return pd.DataFrame(
        [(*k, v["erosion"], v["jsn"]) for k, v in merged.items()],
        columns=[*key, "erosion", "jsn"],
    ).sort_values(key)


def _merged_visit_totals(
    visits: pd.DataFrame, joint_table: pd.DataFrame, sheet_totals: pd.DataFrame, pending: set
) -> tuple[pd.DataFrame, int]:
    """(visits with updated ``svdh_*``, count of totals computed from joint grades).

    ``pending`` visits (graded joints, no totals in the sheet) get totals summed from
    complete joint grades; totals given in the sheet then win.
    """
    visits = visits.copy()
    for column in SCORE_COLUMNS:
        if column not in visits.columns:
            visits[column] = ""
    row_of = {k: i for i, k in enumerate(zip(visits["patient_id"], visits["visit_date"],
                                             strict=True))}  # fmt: skip
    computed = 0
    if pending:
        mask = [k in pending for k in zip(joint_table["patient_id"], joint_table["visit_date"],
                                          strict=True)]  # fmt: skip
        sums = aggregate_joint_scores(joint_table[mask])  # "" reads as not graded
        for r in sums.itertuples(index=False):
            if pd.notna(r.svdh_total):
                i = row_of[(r.patient_id, r.visit_date)]
                for column in SCORE_COLUMNS:
                    visits.at[i, column] = _format(getattr(r, column))
                computed += 1
    for r in sheet_totals.itertuples(index=False):
        i = row_of[(r.patient_id, r.visit_date)]
        for column in SCORE_COLUMNS:
            if pd.notna(getattr(r, column)):
                visits.at[i, column] = _format(getattr(r, column))
    return visits, computed


def _write_merged_cohort(
    cohort: Path,
    out: Path,
    overwrite: bool,
    visits: pd.DataFrame,
    joint_table: pd.DataFrame,
    source: str,
) -> None:
    """Carry the cohort over to ``out`` with the new tables; refuse it unless it reads."""
    cohort_abs = cohort.resolve()
    with building(out, overwrite) as tmp:
        shutil.copytree(cohort, tmp, symlinks=True, copy_function=_hardlink_or_copy,
                        dirs_exist_ok=True,
                        ignore=lambda d, names: [VISITS, JOINT_SCORES]
                        if Path(d).resolve() == cohort_abs else [])  # fmt: skip
        atomic_write_csv(tmp / VISITS, visits)
        atomic_write_csv(tmp / JOINT_SCORES, joint_table)
        try:
            read_cohort(tmp)
        except CohortError as exc:
            raise CohortError(
                f"the cohort with the scores of {source} would not be valid, so nothing was "
                f"written; fix the sheet:\n{exc}"
            ) from None
