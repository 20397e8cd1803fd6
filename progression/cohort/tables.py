"""Cohort format v1: read the tables of a cohort directory, check them, keep them aligned.

A cohort is a directory with ``patients.csv``, ``visits.csv``, ``images.csv`` and an
optional ``joint_scores.csv`` (docs/cohort_format.md). Every cell is read as text and
parsed here, so a problem is reported with the line the user sees in the file (header =
line 1), the column, what is wrong and how to fix it, and all problems of a cohort are
reported together rather than one per run.

:func:`read_cohort` checks the tables and that each image file exists inside the cohort
directory (a cheap ``stat``); decoding every image is left to
:func:`~progression.cohort.validate.validate_cohort` and the image cache.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import logging
import math
import os
import re
import stat as stat_module
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from progression.cohort.images import SUPPORTED_EXTENSIONS
from progression.cohort.problems import ValidationReport
from progression.errors import CohortError
from progression.scoring import (
    DEFAULT_SDC,
    JOINTS,
    REGIONS,
    SVDH_MAX_EROSION,
    SVDH_MAX_JSN,
    SVDH_MAX_TOTAL,
    aggregate_joint_scores,
    joint_by_name,
)

logger = logging.getLogger(__name__)

PATIENTS, VISITS, IMAGES, JOINT_SCORES = (
    "patients.csv",
    "visits.csv",
    "images.csv",
    "joint_scores.csv",
)
REQUIRED_FILES = (PATIENTS, VISITS, IMAGES)
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    PATIENTS: ("patient_id",),
    VISITS: ("patient_id", "visit_date"),
    IMAGES: ("patient_id", "visit_date", "region", "path"),
    JOINT_SCORES: ("patient_id", "visit_date", "joint", "erosion", "jsn"),
}
SCORE_MAX = {
    "svdh_total": SVDH_MAX_TOTAL,
    "svdh_erosion": SVDH_MAX_EROSION,
    "svdh_jsn": SVDH_MAX_JSN,
}
SCORE_COLUMNS = tuple(SCORE_MAX)
# Readers round erosion, JSN and total separately: up to 0.5 SvdH units each.
TOTAL_TOLERANCE = 1.5
# Plausible ranges (units) of the covariates the clinical baselines know; outside -> warning.
PLAUSIBLE_RANGES: dict[str, tuple[float, float, str]] = {
    "crp": (0.0, 300.0, "mg/L"),
    "esr": (0.0, 150.0, "mm/h"),
    "das28": (0.0, 10.0, "DAS28 units"),
    "sjc28": (0.0, 28.0, "swollen joints of 28"),
    "tjc28": (0.0, 28.0, "tender joints of 28"),
    "haq": (0.0, 3.0, "HAQ-DI units"),
    "age": (0.0, 120.0, "years"),
}
# Cells read as "not recorded" (pandas' most common missing markers).
MISSING_TOKENS = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL"})
EARLIEST_YEAR = 1900
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:")  # a Windows drive: C:\images or C:images
_DATE_FIX = "write the date as YYYY-MM-DD, e.g. 2021-03-15"
# A text column with more distinct values than this (and mostly unique) looks like free text.
_MAX_LEVELS = 50
_MAX_ERRORS_IN_MESSAGE = 500


@dataclass(frozen=True)
class CohortSchema:
    """Covariate columns by kind and the levels of each categorical covariate.

    Static covariates come from patients.csv, time-varying ones from visits.csv. A
    column is numeric when every recorded value parses as a number, else categorical;
    levels are sorted so encodings are stable across runs and subsets.
    """

    static_numeric: tuple[str, ...]
    static_categorical: tuple[str, ...]
    visit_numeric: tuple[str, ...]
    visit_categorical: tuple[str, ...]
    levels: dict[str, tuple[str, ...]]

    def to_dict(self) -> dict:
        """JSON-ready form, stored with a model so prediction encodes covariates the same way."""
        return {
            "static_numeric": list(self.static_numeric),
            "static_categorical": list(self.static_categorical),
            "visit_numeric": list(self.visit_numeric),
            "visit_categorical": list(self.visit_categorical),
            "levels": {k: list(v) for k, v in self.levels.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> CohortSchema:
        return cls(
            static_numeric=tuple(data["static_numeric"]),
            static_categorical=tuple(data["static_categorical"]),
            visit_numeric=tuple(data["visit_numeric"]),
            visit_categorical=tuple(data["visit_categorical"]),
            levels={k: tuple(v) for k, v in data["levels"].items()},
        )


@dataclass
class Cohort:
    """The validated tables of one cohort, sorted by patient and date.

    - ``patients``: ``patient_id`` (str), ``birth_date`` (datetime64, if given), static
      covariates (float for numeric, str/NaN for categorical).
    - ``visits``: ``patient_id``, ``visit_date`` (datetime64), ``svdh_total``,
      ``svdh_erosion``, ``svdh_jsn`` (float SvdH units, NaN = not scored), time-varying
      covariates.
    - ``images``: ``patient_id``, ``visit_date``, ``region``, ``path`` (as written,
      relative to ``root``), ``abs_path`` (absolute path string).
    - ``joint_scores``: ``patient_id``, ``visit_date``, ``joint``, ``erosion``, ``jsn``
      (float grades, NaN where not scored), or None when the cohort has none.

    ``fingerprint`` is a stable hash of the tables and of each image file's size and
    modification time: log it with a run to know exactly which data it saw.
    """

    root: Path | None
    patients: pd.DataFrame
    visits: pd.DataFrame
    images: pd.DataFrame
    joint_scores: pd.DataFrame | None
    schema: CohortSchema
    fingerprint: str

    @property
    def patient_ids(self) -> list[str]:
        return self.patients["patient_id"].tolist()

    def subset(self, patient_ids) -> Cohort:
        """The same cohort restricted to ``patient_ids``, every table filtered alike.

        The schema (covariate kinds and category levels) is the full cohort's, so a
        train/validation split encodes covariates identically. Unknown ids raise
        :class:`~progression.errors.CohortError`.
        """
        wanted = {str(p) for p in patient_ids}
        unknown = sorted(wanted - set(self.patients["patient_id"]))
        if unknown:
            shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise CohortError(
                f"subset: {len(unknown)} patient_id(s) not in the cohort: {shown}; "
                "use ids from patients.csv"
            )

        def keep(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[frame["patient_id"].isin(wanted)].reset_index(drop=True)

        digest = hashlib.sha256(self.fingerprint.encode())
        digest.update("\n".join(sorted(wanted)).encode())
        return Cohort(
            root=self.root,
            patients=keep(self.patients),
            visits=keep(self.visits),
            images=keep(self.images),
            joint_scores=None if self.joint_scores is None else keep(self.joint_scores),
            schema=self.schema,
            fingerprint=digest.hexdigest()[:16],
        )

    @classmethod
    def from_frames(
        cls,
        patients: pd.DataFrame,
        visits: pd.DataFrame,
        images: pd.DataFrame | None = None,
        joint_scores: pd.DataFrame | None = None,
        root: str | Path | None = None,
    ) -> Cohort:
        """A cohort from DataFrames with the columns of the format-v1 CSV files.

        For callers that hold tables in memory (a notebook, an MLflow pyfunc input).
        The same checks as :func:`read_cohort` run; problems name the table and the
        row position (0-based, as ``df.iloc``). With ``root``, image paths are relative
        to it and may not leave it; without, paths may be absolute or relative to the
        working directory. ``images=None`` means no radiographs (covariates only).
        Dates may be datetime64 or YYYY-MM-DD text.
        """
        if images is None:
            images = pd.DataFrame(columns=list(KEY_COLUMNS[IMAGES]))
        frames = {PATIENTS: patients, VISITS: visits, IMAGES: images, JOINT_SCORES: joint_scores}
        report = ValidationReport(str(root) if root is not None else "DataFrames")
        tables = {
            kind: None if frame is None else _table_from_frame(frame, kind, report)
            for kind, frame in frames.items()
        }
        base = Path(root).resolve() if root is not None else None
        checker = _Checker(report, base, confined=root is not None)
        cohort = checker.run(tables)
        _raise_on_errors(report)
        assert cohort is not None  # no errors -> built
        return cohort


def read_cohort(root: str | Path) -> Cohort:
    """Read and check the cohort directory ``root`` (format v1).

    Raises :class:`~progression.errors.CohortError` listing every error (file, line,
    column, what, fix). Warnings (suspicious but usable data) are logged. Image files
    are checked to exist inside ``root`` but not decoded; run ``progression validate``
    for that.
    """
    report, cohort, _ = check_tables(root)
    _raise_on_errors(report)
    if report.warnings:
        logger.warning(
            "%s: %d warnings (first: %s); run `progression validate %s` for the full list",
            root,
            len(report.warnings),
            report.warnings[0].render(),
            root,
        )
    assert cohort is not None  # no errors -> parsed
    return cohort


def check_tables(root: str | Path) -> tuple[ValidationReport, Cohort | None, list[tuple[int, str]]]:
    """Check every table of ``root`` without decoding images.

    Returns the report, the Cohort (None when there are errors) and, for validation,
    ``(images.csv line, absolute path)`` of every image file that passed the path checks.
    """
    root = Path(root)
    report = ValidationReport(str(root))
    if not root.is_dir():
        report.add(
            "error",
            str(root),
            None,
            None,
            "cohort directory not found",
            "give the directory that holds patients.csv, visits.csv and images.csv",
        )
        return report, None, []
    tables: dict[str, _Table | None] = {}
    for name in (*REQUIRED_FILES, JOINT_SCORES):
        path = root / name
        if not path.is_file():
            if name in REQUIRED_FILES:
                report.add(
                    "error",
                    name,
                    None,
                    None,
                    "required file is missing",
                    f"create {name} with columns {', '.join(KEY_COLUMNS[name])} "
                    "(see docs/cohort_format.md)",
                )
            tables[name] = None
            continue
        tables[name] = _read_csv(path, name, report)
    checker = _Checker(report, root.resolve(), confined=True)
    cohort = checker.run(tables)
    return report, cohort, checker.image_files


def _raise_on_errors(report: ValidationReport) -> None:
    # problems of a whole file (a missing column, no film found) first: they explain the rest
    errors = sorted(report.errors, key=lambda p: p.row is not None)
    if not errors:
        return
    shown = [p.render() for p in errors[:_MAX_ERRORS_IN_MESSAGE]]
    if len(errors) > len(shown):
        shown.append(
            f"... and {len(errors) - len(shown)} more errors; "
            f"`progression validate {report.root} --json report.json` lists them all"
        )
    raise CohortError(
        f"{report.root}: {len(errors)} error(s) in the cohort (format v1, see "
        "docs/cohort_format.md):\n" + "\n".join(shown)
    )


# ---------------------------------------------------------------------------- reading


@dataclass
class _Table:
    """A table as text: stripped cells ("" = missing) and the line each row came from.

    ``kind`` is the format-v1 file name (``visits.csv``); ``file`` is what problems name
    (the same for a file, ``visits DataFrame`` for a DataFrame).
    """

    kind: str
    file: str
    frame: pd.DataFrame
    lines: np.ndarray

    def has(self, column: str) -> bool:
        return column in self.frame.columns


def _read_csv(path: Path, file: str, report: ValidationReport) -> _Table | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        report.add(
            "error", file, None, None, f"cannot be read ({exc.strerror})", "make it readable"
        )
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        report.add(
            "error",
            file,
            line,
            None,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x})",
            "save the file as UTF-8 CSV (Excel: 'CSV UTF-8 (Comma delimited)')",
        )
        return None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        report.add(
            "error",
            file,
            line,
            None,
            "contains NUL bytes: not a text CSV file",
            "export it again as CSV",
        )
        return None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            if not "".join(record).strip():
                continue  # blank line
            if header is None:
                header = [cell.strip() for cell in record]
                if not _header_ok(header, file, report):
                    return None
                continue
            if len(record) != len(header):
                report.add(
                    "error",
                    file,
                    start,
                    None,
                    f"row has {len(record)} fields but the header has {len(header)}",
                    "give every row one value per column; quote values that contain commas",
                )
                continue
            rows.append([_clean(cell) for cell in record])
            lines.append(start)
    except csv.Error as exc:
        report.add(
            "error",
            file,
            reader.line_num,
            None,
            f"malformed CSV ({exc})",
            "export the file again as CSV",
        )
        return None
    if header is None:
        report.add(
            "error",
            file,
            None,
            None,
            "file is empty (no header line)",
            f"write the header: {','.join(KEY_COLUMNS[file])}",
        )
        return None
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    return _Table(file, file, frame, np.asarray(lines, dtype=np.int64))


def _header_ok(header: list[str], file: str, report: ValidationReport) -> bool:
    ok = True
    if len(header) == 1 and ";" in header[0]:
        report.add(
            "error",
            file,
            1,
            None,
            "columns are separated by ';' instead of ','",
            "save as comma-separated CSV (Excel: 'CSV UTF-8 (Comma delimited)')",
        )
        return False
    seen: set[str] = set()
    for i, name in enumerate(header, start=1):
        if not name:
            report.add(
                "error",
                file,
                1,
                None,
                f"column {i} has no name",
                "name it in the header or delete the column",
            )
            ok = False
        elif name in seen:
            report.add(
                "error",
                file,
                1,
                name,
                "column appears twice in the header",
                "rename or remove one of them",
            )
            ok = False
        seen.add(name)
    return ok


def _clean(cell: str) -> str:
    cell = cell.strip()
    return "" if cell in MISSING_TOKENS else cell


def _table_from_frame(frame: pd.DataFrame, kind: str, report: ValidationReport) -> _Table | None:
    """A DataFrame as text cells, so DataFrames and CSV files go through the same checks."""
    file = f"{kind.removesuffix('.csv')} DataFrame"

    def text(value) -> str:
        try:
            missing = bool(pd.isna(value))
        except (TypeError, ValueError):  # list-like cell
            missing = False
        if missing:
            return ""
        if isinstance(value, pd.Timestamp | date | np.datetime64):
            return pd.Timestamp(value).strftime("%Y-%m-%d")
        if isinstance(value, np.floating | float) and float(value).is_integer():
            return str(int(value)) if abs(value) < 2**53 else str(float(value))
        return _clean(str(value))

    columns = [str(c).strip() for c in frame.columns]
    if not _header_ok(columns, file, report):
        return None
    rows = [[text(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    out = pd.DataFrame(rows, columns=columns, dtype=object)
    return _Table(kind, file, out, np.arange(len(out), dtype=np.int64))


# ---------------------------------------------------------------------------- parsing


def _parse_number(text: str) -> tuple[float, str | None]:
    """(value, problem); "" -> NaN. inf is a problem because no model can use it."""
    if not text:
        return math.nan, None
    try:
        value = float(text)
    except ValueError:
        return math.nan, f"'{text}' is not a number"
    if math.isinf(value):
        return math.nan, f"'{text}' is infinite"
    return value, None


@dataclass
class _Parsed:
    """What the checks parsed, kept so the Cohort is built without parsing twice."""

    births: dict[str, date] = field(default_factory=dict)
    visit_dates: list[date | None] = field(default_factory=list)
    image_dates: list[date | None] = field(default_factory=list)
    abs_paths: list[str | None] = field(default_factory=list)
    joint_dates: list[date | None] = field(default_factory=list)
    # (numeric column -> values, categorical column -> levels) of each covariate table
    static: tuple[dict, dict] = field(default_factory=lambda: ({}, {}))
    per_visit: tuple[dict, dict] = field(default_factory=lambda: ({}, {}))


class _Checker:
    """Runs every check, adding problems to one report; returns the Cohort if all is well."""

    def __init__(self, report: ValidationReport, root: Path | None, confined: bool):
        self.report = report
        self.root = root
        self.confined = confined  # image paths must stay inside root
        self.today = date.today()
        self._dates: dict[str, tuple[date | None, str | None]] = {}
        # (images.csv line, absolute path) of image files that passed the path checks
        self.image_files: list[tuple[int, str]] = []
        self.image_stats: dict[str, tuple[int, int]] = {}  # absolute path -> (bytes, mtime_ns)
        self._n_missing_images = 0  # rows of images.csv whose file does not exist

    def error(
        self, table: _Table, i: int | None, column: str | None, message: str, fix: str
    ) -> None:
        row = None if i is None else int(table.lines[i])
        self.report.add("error", table.file, row, column, message, fix)

    def warn(
        self, table: _Table, i: int | None, column: str | None, message: str, fix: str
    ) -> None:
        row = None if i is None else int(table.lines[i])
        self.report.add("warning", table.file, row, column, message, fix)

    # -- per-table ----------------------------------------------------------------------

    def run(self, tables: dict[str, _Table | None]) -> Cohort | None:
        patients = self._required_columns(tables.get(PATIENTS))
        visits = self._required_columns(tables.get(VISITS))
        images = self._required_columns(tables.get(IMAGES))
        joints = self._required_columns(tables.get(JOINT_SCORES))

        parsed = _Parsed()
        patient_rows: dict[str, int] = {}
        if patients is not None:
            patient_rows, parsed.births = self._patients(patients)
        visit_keys: dict[tuple[str, date], int] | None = None
        if visits is not None:
            visit_keys, parsed.visit_dates = self._visits(visits, parsed.births)
        if images is not None:
            parsed.image_dates, parsed.abs_paths = self._images(images, visit_keys)
        if joints is not None:
            parsed.joint_dates = self._joints(joints, visit_keys)

        if patients is not None and visits is not None:
            self._patients_vs_visits(patients, patient_rows, visits)
        if patients is not None and images is not None:
            self._patients_without_images(patients, patient_rows, images)

        self.report.n_patients = len(patient_rows)
        self.report.n_visits = len(visit_keys or {})
        self.report.n_images = 0 if images is None else len(images.frame)
        if patients is not None and not patient_rows:
            self.error(
                patients, None, None, "cohort is empty: no patients", "add one row per patient"
            )

        if patients is not None:
            parsed.static = self._covariates(patients, exclude=("patient_id", "birth_date"))
        if visits is not None:
            parsed.per_visit = self._covariates(
                visits, exclude=("patient_id", "visit_date", *SCORE_COLUMNS)
            )
            for name in [*parsed.static[0], *parsed.static[1]]:
                if name in visits.frame.columns:
                    self.error(
                        visits,
                        None,
                        name,
                        f"column {name} is also in patients.csv; a covariate must be either "
                        "static (patients.csv) or per visit (visits.csv)",
                        "rename or remove one of the two",
                    )
            if joints is not None and not self._has_errors(joints):
                self._joints_vs_totals(joints, visits, parsed.visit_dates, parsed.joint_dates)
            self._score_decreases(visits, parsed.visit_dates)

        if not self.report.ok or patients is None or visits is None or images is None:
            return None
        return self._build(patients, visits, images, joints, parsed)

    def _has_errors(self, table: _Table) -> bool:
        return any(p.severity == "error" and p.file == table.file for p in self.report.problems)

    def _required_columns(self, table: _Table | None) -> _Table | None:
        """The table when it has its key columns; else report them and skip the table."""
        if table is None:
            return None
        missing = [c for c in KEY_COLUMNS[table.kind] if not table.has(c)]
        for column in missing:
            close = difflib.get_close_matches(column, list(table.frame.columns), n=1)
            hint = f" (is '{close[0]}' meant to be {column}?)" if close else ""
            self.error(
                table,
                None,
                column,
                f"required column {column} is missing{hint}",
                f"add a {column} column to the header (line 1)",
            )
        return None if missing else table

    def _date(self, text: str) -> tuple[date | None, str | None]:
        if text not in self._dates:
            self._dates[text] = self._parse_date(text)
        return self._dates[text]

    def _parse_date(self, text: str) -> tuple[date | None, str | None]:
        if not text:
            return None, "date is empty"
        match = _DATE.fullmatch(text)
        if not match:
            return None, f"'{text}' is not a date in YYYY-MM-DD form"
        try:
            value = date(*(int(g) for g in match.groups()))
        except ValueError:
            return None, f"'{text}' is not a calendar date"
        if value.year < EARLIEST_YEAR:
            return None, f"{text} is before {EARLIEST_YEAR}"
        if value > self.today:
            return None, f"{text} is in the future (today is {self.today.isoformat()})"
        return value, None

    def _key_cells(self, table: _Table, with_date: bool) -> tuple[list[str], list[date | None]]:
        """patient_id and visit_date per row (None date where invalid), reporting problems."""
        ids = table.frame["patient_id"].tolist()
        dates: list[date | None] = []
        for i, pid in enumerate(ids):
            if not pid:
                self.error(
                    table, i, "patient_id", "patient_id is empty", "fill in the patient's id"
                )
        if with_date:
            for i, text in enumerate(table.frame["visit_date"].tolist()):
                value, problem = self._date(text)
                if problem:
                    self.error(table, i, "visit_date", problem, _DATE_FIX)
                dates.append(value)
        return ids, dates

    def _duplicates(self, table: _Table, key: list[str], what: str) -> None:
        """Identical rows, then different rows sharing ``key``: both are errors."""
        first_row: dict[tuple, int] = {}
        first_key: dict[tuple, int] = {}
        cells = table.frame.to_numpy()
        key_idx = [table.frame.columns.get_loc(c) for c in key]
        for i, row in enumerate(map(tuple, cells)):
            k = tuple(row[j] for j in key_idx)
            if any(not v for v in k):
                continue  # reported as empty already
            if row in first_row:
                self.error(
                    table,
                    i,
                    None,
                    f"duplicate row: identical to line {table.lines[first_row[row]]}",
                    "delete one of the two rows",
                )
                continue
            first_row[row] = i
            if k in first_key:
                self.error(
                    table,
                    i,
                    None,
                    f"{what} {' / '.join(k)} also on line {table.lines[first_key[k]]} with "
                    "different values",
                    "keep one row per " + what + " (correct or delete the other)",
                )
            else:
                first_key[k] = i

    def _patients(self, table: _Table) -> tuple[dict[str, int], dict[str, date]]:
        ids, _ = self._key_cells(table, with_date=False)
        self._duplicates(table, ["patient_id"], "patient")
        rows: dict[str, int] = {}
        for i, pid in enumerate(ids):
            if pid and pid not in rows:
                rows[pid] = i
        births: dict[str, date] = {}
        if table.has("birth_date"):
            for i, text in enumerate(table.frame["birth_date"].tolist()):
                if not text:
                    continue
                value, problem = self._date(text)
                if problem:
                    self.error(table, i, "birth_date", problem, _DATE_FIX + ", or leave it empty")
                elif ids[i]:
                    births.setdefault(ids[i], value)
        return rows, births

    def _visits(
        self, table: _Table, births: dict[str, date]
    ) -> tuple[dict[tuple[str, date], int], list[date | None]]:
        ids, dates = self._key_cells(table, with_date=True)
        self._duplicates(table, ["patient_id", "visit_date"], "visit (patient / date)")
        keys: dict[tuple[str, date], int] = {}
        for i, (pid, day) in enumerate(zip(ids, dates)):
            if not pid or day is None:
                continue
            keys.setdefault((pid, day), i)
            birth = births.get(pid)
            if birth is not None and day < birth:
                self.error(
                    table,
                    i,
                    "visit_date",
                    f"visit {day.isoformat()} is before the patient's birth_date {birth.isoformat()}",
                    "correct the visit_date here or the birth_date in patients.csv",
                )
        scores = {c: self._number_column(table, c) for c in SCORE_COLUMNS if table.has(c)}
        for column, values in scores.items():
            top = SCORE_MAX[column]
            for i, v in enumerate(values):
                if not math.isnan(v) and not 0 <= v <= top:
                    self.error(
                        table,
                        i,
                        column,
                        f"{v:g} is outside the SvdH range 0-{top}",
                        f"correct the score (SvdH {column.removeprefix('svdh_')} is 0-{top})",
                    )
        if len(scores) == 3:
            for i, (t, e, j) in enumerate(zip(*(scores[c] for c in SCORE_COLUMNS))):
                if not math.isnan(t + e + j) and abs(t - (e + j)) > TOTAL_TOLERANCE:
                    self.error(
                        table,
                        i,
                        "svdh_total",
                        f"svdh_total {t:g} differs from svdh_erosion + svdh_jsn = {e + j:g}",
                        "correct the scores: total = erosion + JSN",
                    )
        for column in table.frame.columns:
            if column.startswith("svdh_") and column not in SCORE_COLUMNS:
                close = difflib.get_close_matches(column, SCORE_COLUMNS, n=1)
                self.warn(
                    table,
                    None,
                    column,
                    f"column {column} is not a score column"
                    + (f" (did you mean {close[0]}?)" if close else "")
                    + "; it is read as a covariate",
                    f"rename it to one of {', '.join(SCORE_COLUMNS)} if it is a score",
                )
        return keys, dates

    def _number_column(self, table: _Table, column: str) -> list[float]:
        """A column that must be numeric: text and inf are errors (wrong dtype)."""
        values: list[float] = []
        for i, text in enumerate(table.frame[column].tolist()):
            value, problem = _parse_number(text)
            if problem:
                self.error(
                    table,
                    i,
                    column,
                    f"{problem} in numeric column {column}",
                    "write a number (decimal point '.') or leave the cell empty",
                )
            values.append(value)
        return values

    def _images(
        self, table: _Table, visit_keys: dict[tuple[str, date], int] | None
    ) -> tuple[list[date | None], list[str | None]]:
        ids, dates = self._key_cells(table, with_date=True)
        for i, region in enumerate(table.frame["region"].tolist()):
            if region not in REGIONS:
                close = difflib.get_close_matches(region.lower(), REGIONS, n=1)
                self.error(
                    table,
                    i,
                    "region",
                    f"unknown region '{region}'"
                    + (f" (did you mean {close[0]}?)" if close else ""),
                    f"use one of {', '.join(REGIONS)}",
                )
        self._duplicates(
            table, ["patient_id", "visit_date", "region"], "image (patient / date / region)"
        )
        abs_paths: list[str | None] = []
        seen_paths: dict[str, int] = {}
        rows = list(map(tuple, table.frame.to_numpy()))
        for i, text in enumerate(table.frame["path"].tolist()):
            resolved = self._image_path(table, i, text)
            abs_paths.append(resolved)
            if resolved is None:
                continue
            self.image_files.append((int(table.lines[i]), resolved))
            first = seen_paths.setdefault(resolved, i)
            if first != i and rows[i] != rows[first]:  # identical rows: reported as duplicates
                self.warn(
                    table,
                    i,
                    "path",
                    f"the same file is also used on line {table.lines[first]}",
                    "check that each row points at its own radiograph",
                )
        if len(table.frame) > 1 and self._n_missing_images == len(table.frame):
            # one cause, not one per row: the wrong directory, or tables without their films
            self.error(
                table, None, "path",
                f"none of the {len(table.frame)} image files listed exists under "
                f"{self.root or 'the working directory'}",
                "give the cohort's own directory (paths in images.csv are relative to it); a "
                "cohort simulated with --no-images has tables only: simulate it again without "
                "--no-images to get its radiographs",
            )
        if visit_keys is not None:
            missing: dict[tuple[str, date], list[int]] = defaultdict(list)
            for i, (pid, day) in enumerate(zip(ids, dates)):
                if pid and day is not None and (pid, day) not in visit_keys:
                    missing[(pid, day)].append(i)
            for (pid, day), rows in missing.items():
                for i in rows:
                    self.error(
                        table,
                        i,
                        "visit_date",
                        f"no visit of patient {pid} on {day.isoformat()} in visits.csv",
                        "add the visit to visits.csv or correct patient_id/visit_date here",
                    )
        return dates, abs_paths

    def _image_path(self, table: _Table, i: int, text: str) -> str | None:
        """Absolute path of a safe, existing image file, else None (problem reported).

        Paths are checked as text first, so a path that leaves the cohort directory is
        never opened or even looked at on disk.
        """
        if not text:
            self.error(
                table,
                i,
                "path",
                "path is empty",
                "give the image file, relative to the cohort directory",
            )
            return None
        if "\x00" in text:
            self.error(table, i, "path", "path contains a NUL character", "correct the path")
            return None
        # Windows-style separators are accepted so a cohort written on Windows reads here.
        posix = text.replace("\\", "/")
        is_absolute = posix.startswith("/") or _WINDOWS_DRIVE.match(posix) is not None
        if self.confined:
            if is_absolute:
                self.error(
                    table,
                    i,
                    "path",
                    f"'{text}' is an absolute path",
                    "give the path relative to the cohort directory (copy or link the images inside it)",
                )
                return None
            normal = os.path.normpath(posix)
            if normal == ".." or normal.startswith("../"):
                self.error(
                    table,
                    i,
                    "path",
                    f"'{text}' points outside the cohort directory",
                    "keep images inside the cohort directory and give paths relative to it",
                )
                return None
            full = os.path.join(str(self.root), normal)
        else:
            full = os.path.abspath(
                posix if is_absolute or self.root is None else os.path.join(str(self.root), posix)
            )
        suffix = os.path.splitext(full)[1].lower()
        if suffix not in SUPPORTED_EXTENSIONS:
            self.error(
                table,
                i,
                "path",
                f"unsupported file type '{suffix or '(none)'}' for {text}",
                f"convert the image to one of {', '.join(SUPPORTED_EXTENSIONS)}",
            )
            return None
        try:
            stat = os.stat(full)
        except FileNotFoundError:
            self._n_missing_images += 1
            self.error(
                table, i, "path", f"image file {text} not found", "correct the path or add the file"
            )
            return None
        except OSError as exc:
            self.error(
                table,
                i,
                "path",
                f"image file {text} cannot be read ({exc.strerror})",
                "make it readable",
            )
            return None
        if not stat_module.S_ISREG(stat.st_mode):
            self.error(table, i, "path", f"{text} is not a file", "point the path at an image file")
            return None
        if stat.st_size == 0:
            self.error(
                table, i, "path", f"image file {text} is empty (0 bytes)", "copy the image again"
            )
            return None
        self.image_stats[full] = (stat.st_size, stat.st_mtime_ns)
        return full

    def _joints(
        self, table: _Table, visit_keys: dict[tuple[str, date], int] | None
    ) -> list[date | None]:
        ids, dates = self._key_cells(table, with_date=True)
        self._duplicates(
            table, ["patient_id", "visit_date", "joint"], "joint score (patient / date / joint)"
        )
        erosion = self._number_column(table, "erosion")
        jsn = self._number_column(table, "jsn")
        for i, name in enumerate(table.frame["joint"].tolist()):
            try:
                joint = joint_by_name(name)
            except KeyError:
                self.error(
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
                if math.isnan(value):
                    continue
                if top is None:
                    self.error(
                        table,
                        i,
                        column,
                        f"joint {name} has no {column} component in SvdH",
                        f"leave {column} empty for {name}",
                    )
                elif not 0 <= value <= top or not value.is_integer():
                    self.error(
                        table,
                        i,
                        column,
                        f"{value:g} is not an SvdH {column} grade for {name} (0-{top})",
                        f"write an integer grade 0-{top}",
                    )
        if visit_keys is not None:
            for i, (pid, day) in enumerate(zip(ids, dates)):
                if pid and day is not None and (pid, day) not in visit_keys:
                    self.error(
                        table,
                        i,
                        "visit_date",
                        f"no visit of patient {pid} on {day.isoformat()} in visits.csv",
                        "add the visit to visits.csv or correct patient_id/visit_date here",
                    )
        return dates

    # -- across tables ------------------------------------------------------------------

    def _patients_vs_visits(
        self, patients: _Table, patient_rows: dict[str, int], visits: _Table
    ) -> None:
        visit_rows: dict[str, list[int]] = defaultdict(list)
        for i, pid in enumerate(visits.frame["patient_id"].tolist()):
            if pid:
                visit_rows[pid].append(i)
        for pid, rows in visit_rows.items():
            if pid not in patient_rows:
                shown = ", ".join(str(visits.lines[i]) for i in rows[:5]) + (
                    " ..." if len(rows) > 5 else ""
                )
                self.error(
                    visits,
                    rows[0],
                    "patient_id",
                    f"patient {pid} (lines {shown}) is not in patients.csv",
                    "add the patient to patients.csv or correct the patient_id",
                )
        for pid, i in patient_rows.items():
            if pid not in visit_rows:
                self.error(
                    patients,
                    i,
                    "patient_id",
                    f"patient {pid} has no visits in visits.csv",
                    "add the patient's visits or remove the patient",
                )

    def _patients_without_images(
        self, patients: _Table, patient_rows: dict[str, int], images: _Table
    ) -> None:
        with_images = set(images.frame["patient_id"].tolist())
        for pid, i in patient_rows.items():
            if pid not in with_images:
                self.warn(
                    patients,
                    i,
                    "patient_id",
                    f"patient {pid} has no images",
                    "add radiographs to images.csv; without them the forecast uses covariates only",
                )

    def _joints_vs_totals(
        self,
        joints: _Table,
        visits: _Table,
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
            frame[column] = [_parse_number(c)[0] for c in frame[column]]
        totals = aggregate_joint_scores(frame, source=joints.file)
        summed = {
            (p, d): t
            for p, d, t in zip(totals["patient_id"], totals["visit_date"], totals["svdh_total"])
        }
        for i, (pid, day, text) in enumerate(
            zip(visits.frame["patient_id"], visit_dates, visits.frame["svdh_total"])
        ):
            given = _parse_number(text)[0]
            total = summed.get((pid, day), math.nan)
            if abs(given - total) > TOTAL_TOLERANCE:  # False when either is NaN
                self.warn(
                    visits,
                    i,
                    "svdh_total",
                    f"svdh_total {given:g} differs from the sum of joint_scores.csv ({total:g})",
                    "correct the visit total or the joint grades",
                )

    def _score_decreases(self, visits: _Table, visit_dates: list[date | None]) -> None:
        """Damage does not heal: a fall larger than the SDC is likely a reading or entry error."""
        if not visits.has("svdh_total"):
            return
        by_patient: dict[str, list[tuple[date, float, int]]] = defaultdict(list)
        for i, (pid, day, text) in enumerate(
            zip(visits.frame["patient_id"], visit_dates, visits.frame["svdh_total"])
        ):
            score = _parse_number(text)[0]
            if day is not None and not math.isnan(score):
                by_patient[pid].append((day, score, i))
        for pid, series in by_patient.items():
            series.sort()
            for (d0, s0, _), (d1, s1, i) in zip(series, series[1:]):
                if s0 - s1 > DEFAULT_SDC:
                    self.warn(
                        visits,
                        i,
                        "svdh_total",
                        f"svdh_total of patient {pid} falls from {s0:g} ({d0.isoformat()}) to {s1:g} "
                        f"({d1.isoformat()}), more than the smallest detectable change ({DEFAULT_SDC:g})",
                        "check both readings; SvdH damage does not usually heal",
                    )

    def _covariates(
        self, table: _Table, exclude: tuple[str, ...]
    ) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
        """Split covariate columns into numeric (parsed) and categorical (levels)."""
        numeric: dict[str, list[float]] = {}
        categorical: dict[str, list[str]] = {}
        for column in table.frame.columns:
            if column in exclude:
                continue
            cells = table.frame[column].tolist()
            recorded = [(i, c) for i, c in enumerate(cells) if c]
            parsed = [(i, c, *_parse_number(c)) for i, c in recorded]
            text_rows = [
                (i, c) for i, c, _, problem in parsed if problem and "not a number" in problem
            ]
            if column in PLAUSIBLE_RANGES or not text_rows:
                values = self._number_column(table, column)
                numeric[column] = values
                self._plausible(table, column, values)
                continue
            if len(text_rows) <= 0.1 * len(recorded) and len(recorded) >= 10:
                shown = ", ".join(str(table.lines[i]) for i, _ in text_rows[:5])
                self.warn(
                    table,
                    text_rows[0][0],
                    column,
                    f"column {column} is numeric except {len(text_rows)} cell(s) (lines {shown}, "
                    f"e.g. '{text_rows[0][1]}'); it is read as categorical",
                    "write numbers in every cell (empty = not recorded) to use it as a number",
                )
            levels = sorted({c for _, c in recorded})
            if len(levels) > _MAX_LEVELS and len(levels) > 0.5 * len(recorded):
                self.warn(
                    table,
                    None,
                    column,
                    f"text column {column} has {len(levels)} distinct values: it looks like free "
                    "text or an id, and each value becomes its own category",
                    "remove the column or group its values",
                )
            categorical[column] = levels
        return numeric, categorical

    def _plausible(self, table: _Table, column: str, values: list[float]) -> None:
        if column not in PLAUSIBLE_RANGES:
            return
        lo, hi, unit = PLAUSIBLE_RANGES[column]
        for i, v in enumerate(values):
            if not math.isnan(v) and not lo <= v <= hi:
                self.warn(
                    table,
                    i,
                    column,
                    f"{column} {v:g} is outside the plausible range {lo:g}-{hi:g} {unit}",
                    f"check the value and its unit ({unit})",
                )

    # -- building -----------------------------------------------------------------------

    def _build(
        self,
        patients: _Table,
        visits: _Table,
        images: _Table,
        joints: _Table | None,
        parsed: _Parsed,
    ) -> Cohort:
        def covariate_frame(table: _Table, numeric: dict, categorical: dict) -> dict:
            out: dict[str, object] = {}
            for column in table.frame.columns:
                if column in numeric:
                    out[column] = np.asarray(numeric[column], dtype=np.float64)
                elif column in categorical:
                    out[column] = [c if c else np.nan for c in table.frame[column]]
            return out

        pat = {"patient_id": patients.frame["patient_id"].astype(str).tolist()}
        if patients.has("birth_date"):
            pat["birth_date"] = pd.to_datetime([parsed.births.get(p) for p in pat["patient_id"]])
        pat.update(covariate_frame(patients, *parsed.static))
        patients_df = (
            pd.DataFrame(pat).sort_values("patient_id", kind="stable").reset_index(drop=True)
        )

        vis: dict[str, object] = {
            "patient_id": visits.frame["patient_id"].astype(str).tolist(),
            "visit_date": pd.to_datetime(parsed.visit_dates),
        }
        for column in SCORE_COLUMNS:
            vis[column] = (
                np.asarray([_parse_number(c)[0] for c in visits.frame[column]], dtype=np.float64)
                if visits.has(column)
                else np.full(len(visits.frame), np.nan)
            )
        # A visit scored by component only still has a total (erosion + JSN).
        fill = (
            np.isnan(vis["svdh_total"])
            & ~np.isnan(vis["svdh_erosion"])
            & ~np.isnan(vis["svdh_jsn"])
        )
        vis["svdh_total"] = np.where(fill, vis["svdh_erosion"] + vis["svdh_jsn"], vis["svdh_total"])
        vis.update(covariate_frame(visits, *parsed.per_visit))
        visits_df = (
            pd.DataFrame(vis)
            .sort_values(["patient_id", "visit_date"], kind="stable")
            .reset_index(drop=True)
        )

        images_df = pd.DataFrame(
            {
                "patient_id": images.frame["patient_id"].astype(str).tolist(),
                "visit_date": pd.to_datetime(pd.Series(parsed.image_dates, dtype=object)),
                "region": images.frame["region"].tolist(),
                "path": [p.replace("\\", "/") for p in images.frame["path"]],
                "abs_path": parsed.abs_paths,
            }
        )
        images_df = images_df.sort_values(
            ["patient_id", "visit_date", "region"], kind="stable"
        ).reset_index(drop=True)

        joints_df = None
        if joints is not None:
            joints_df = (
                pd.DataFrame(
                    {
                        "patient_id": joints.frame["patient_id"].astype(str).tolist(),
                        "visit_date": pd.to_datetime(pd.Series(parsed.joint_dates, dtype=object)),
                        "joint": joints.frame["joint"].tolist(),
                        "erosion": [_parse_number(c)[0] for c in joints.frame["erosion"]],
                        "jsn": [_parse_number(c)[0] for c in joints.frame["jsn"]],
                    }
                )
                .sort_values(["patient_id", "visit_date", "joint"], kind="stable")
                .reset_index(drop=True)
            )

        schema = CohortSchema(
            static_numeric=tuple(parsed.static[0]),
            static_categorical=tuple(parsed.static[1]),
            visit_numeric=tuple(parsed.per_visit[0]),
            visit_categorical=tuple(parsed.per_visit[1]),
            levels={k: tuple(v) for k, v in {**parsed.static[1], **parsed.per_visit[1]}.items()},
        )
        return Cohort(
            root=self.root,
            patients=patients_df,
            visits=visits_df,
            images=images_df,
            joint_scores=joints_df,
            schema=schema,
            fingerprint=_fingerprint(
                patients_df, visits_df, images_df, joints_df, self.image_stats
            ),
        )


def _fingerprint(patients, visits, images, joints, image_stats: dict[str, tuple[int, int]]) -> str:
    """Stable hash of the parsed tables and each image file's size and mtime (16 hex digits)."""
    digest = hashlib.sha256()
    for name, frame in (
        ("patients", patients),
        ("visits", visits),
        ("images", images),
        ("joints", joints),
    ):
        if frame is None:
            continue
        digest.update(name.encode())
        digest.update(
            frame.drop(columns=["abs_path"], errors="ignore").to_csv(index=False).encode()
        )
    for path, full in zip(images["path"], images["abs_path"]):
        size, mtime_ns = image_stats[full]
        digest.update(f"{path}\0{size}\0{mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
