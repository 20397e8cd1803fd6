"""What every check shares: the report, the cohort root, parsed dates and the common cell checks.

A check adds problems to one :class:`~progression.cohort.problems.ValidationReport` (file,
line as the user's editor shows it, column, what, fix) instead of stopping at the first.
"""

from __future__ import annotations

import difflib
from datetime import date
from pathlib import Path

from progression.cohort.cells import Table, parse_number
from progression.cohort.format import DATE_FIX, DATE_PATTERN, EARLIEST_YEAR, KEY_COLUMNS
from progression.cohort.problems import ValidationReport
from progression.scoring import SVDH, ScoringSystem

VisitKeys = dict[tuple[str, date], int]  # (patient_id, visit_date) -> row of visits.csv


class CheckContext:
    """The report being filled and what the checks learn on the way.

    ``confined``: image paths must stay inside ``root`` (a cohort directory, or DataFrames
    given with a root); ``allow_external_images``: a symbolic link inside the cohort may point
    at a file outside it (the cohort's explicit opt-in, docs/cohort_format.md);
    ``scoring``: the system the cohort's scores are in (``cohort.yaml`` ``scoring``).
    """

    def __init__(
        self,
        report: ValidationReport,
        root: Path | None,
        confined: bool,
        allow_external_images: bool = False,
        scoring: ScoringSystem = SVDH,
    ):
        self.report = report
        self.root = root
        self.confined = confined
        self.allow_external_images = allow_external_images
        self.scoring = scoring
        self.today = date.today()
        self._dates: dict[str, tuple[date | None, str | None]] = {}
        # (images.csv line, absolute path) of image files that passed the path checks
        self.image_files: list[tuple[int, str]] = []
        self.image_stats: dict[str, tuple[int, int]] = {}  # absolute path -> (bytes, mtime_ns)
        self.n_missing_images = 0  # rows of images.csv whose file does not exist

    def error(self, table: Table, i: int | None, column: str | None, message: str, fix: str):
        row = None if i is None else int(table.lines[i])
        self.report.add("error", table.file, row, column, message, fix)

    def warn(self, table: Table, i: int | None, column: str | None, message: str, fix: str):
        row = None if i is None else int(table.lines[i])
        self.report.add("warning", table.file, row, column, message, fix)

    def has_errors(self, table: Table) -> bool:
        return any(p.severity == "error" and p.file == table.file for p in self.report.problems)

    def required_columns(self, table: Table | None) -> Table | None:
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

    def date(self, text: str) -> tuple[date | None, str | None]:
        """(date, problem) of a YYYY-MM-DD cell; each distinct text is parsed once."""
        if text not in self._dates:
            self._dates[text] = self._parse_date(text)
        return self._dates[text]

    def _parse_date(self, text: str) -> tuple[date | None, str | None]:
        if not text:
            return None, "date is empty"
        match = DATE_PATTERN.fullmatch(text)
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

    def key_cells(self, table: Table, with_date: bool) -> tuple[list[str], list[date | None]]:
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
                value, problem = self.date(text)
                if problem:
                    self.error(table, i, "visit_date", problem, DATE_FIX)
                dates.append(value)
        return ids, dates

    def duplicates(self, table: Table, key: list[str], what: str) -> None:
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

    def number_column(self, table: Table, column: str) -> list[float]:
        """A column that must be numeric: text and inf are errors (wrong dtype)."""
        values: list[float] = []
        for i, text in enumerate(table.frame[column].tolist()):
            value, problem = parse_number(text)
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

    def rows_without_visit(
        self, table: Table, ids: list[str], dates: list[date | None], visit_keys: VisitKeys
    ) -> None:
        """An image or joint-score row must belong to a visit of visits.csv."""
        for i, (pid, day) in enumerate(zip(ids, dates)):
            if pid and day is not None and (pid, day) not in visit_keys:
                self.error(
                    table,
                    i,
                    "visit_date",
                    f"no visit of patient {pid} on {day.isoformat()} in visits.csv",
                    "add the visit to visits.csv or correct patient_id/visit_date here",
                )

