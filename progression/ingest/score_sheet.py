"""Read a reader-score sheet (CSV or Excel) in long or wide form into per-joint grades.

Long form: one row per joint and visit, columns ``patient_id, visit_date, joint`` and
``erosion`` and/or ``jsn``. Wide form: one row per visit, one column per joint and
component (``LH_mcp2_E``, ``hand_left_mcp2_jsn``, RA2-DREAM style), optionally visit
totals (``svdh_total``, ``svdh_erosion``, ``svdh_jsn`` or ``total``, ``erosion``,
``jsn``, ``Overall_Tol``, ``Overall_erosion``, ``Overall_narrowing``). Joint names go
through a :class:`~progression.ingest.joint_map.JointMap`.

Every problem raises :class:`~progression.errors.CohortError` naming the file, the row
as a spreadsheet shows it (header = row 1), the column and the fix.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from progression.cohort.format import MISSING_TOKENS, SCORE_MAX
from progression.errors import CohortError
from progression.ingest.joint_map import COMPONENTS, JointMap, normalize
from progression.scoring import joint_by_name

logger = logging.getLogger(__name__)

EXCEL_SUFFIXES = (".xlsx", ".xlsm")
KEY_ALIASES: dict[str, tuple[str, ...]] = {
    "patient_id": ("patient_id", "patientid", "patient", "subject_id", "subject", "id"),
    "visit_date": ("visit_date", "date", "study_date", "visitdate", "exam_date"),
}
TOTAL_ALIASES: dict[str, tuple[str, ...]] = {
    "svdh_total": ("svdh_total", "total", "svdh", "sharp_total", "overall_tol", "overall_total"),
    "svdh_erosion": ("svdh_erosion", "erosion", "total_erosion", "overall_erosion"),
    "svdh_jsn": ("svdh_jsn", "jsn", "total_jsn", "narrowing", "overall_narrowing"),
}
COMPONENT_SUFFIXES: dict[str, str] = {
    "e": "erosion", "ero": "erosion", "erosion": "erosion",
    "j": "jsn", "n": "jsn", "jsn": "jsn", "narrowing": "jsn",
}  # fmt: skip
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[ T]00:00(?::00)?)?")
_MAX_ERRORS = 20


@dataclass
class SheetScores:
    """Grades read from a sheet, in this project's names.

    ``joints``: ``patient_id, visit_date, joint, component, grade, where`` (the cell),
    ``row`` (one row per graded component); ``totals``: ``patient_id, visit_date, row``
    + the score columns the sheet gives; ``skipped``: unknown joint names skipped with a warning.
    """

    joints: pd.DataFrame
    totals: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    form: str = "long"


class _Errors:
    def __init__(self, source: str):
        self.source = source
        self.lines: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.lines:
            shown = self.lines[:_MAX_ERRORS]
            more = len(self.lines) - len(shown)
            text = "\n  ".join(shown) + (f"\n  ... and {more} more" if more else "")
            raise CohortError(
                f"{self.source}: {len(self.lines)} problem(s); nothing was written\n  {text}"
            )


def read_sheet(path: str | Path, sheet: str | None = None) -> tuple[pd.DataFrame, str]:
    """The sheet as text cells (stripped) and how to name it in messages."""
    path = Path(path)
    if not path.is_file():
        raise CohortError(f"score file {path} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        try:
            import openpyxl  # noqa: F401  (pandas reads .xlsx through it)
        except ImportError:
            raise CohortError("reading .xlsx needs openpyxl: pip install openpyxl") from None
        try:
            sheets = pd.ExcelFile(path, engine="openpyxl")
        except Exception as exc:
            raise CohortError(
                f"{path} is not a readable Excel workbook ({type(exc).__name__}: {exc}); "
                "save it again as .xlsx or export the sheet as CSV UTF-8"
            ) from None
        name = sheet if sheet is not None else sheets.sheet_names[0]
        if name not in sheets.sheet_names:
            raise CohortError(
                f"{path} has no sheet '{name}'; its sheets: {', '.join(sheets.sheet_names)} "
                "(choose one with --sheet NAME)"
            )
        frame = sheets.parse(name, dtype=str, keep_default_na=False)
        source = f"{path.name} sheet '{name}'"
    elif suffix in (".csv", ".txt", ".tsv"):
        if sheet is not None:
            raise CohortError(f"--sheet applies to Excel files; {path} is a text file")
        try:
            with open(path, encoding="utf-8-sig") as handle:
                header = handle.readline()
            # The header decides the delimiter: Excel writes ';' in some locales.
            sep = max((",", ";", "\t"), key=header.count)
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep,
                                encoding="utf-8-sig")  # fmt: skip
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise CohortError(
                f"{path} cannot be read as CSV ({type(exc).__name__}: {exc}); save it as "
                "CSV UTF-8 with a header line"
            ) from None
        source = path.name
    else:
        raise CohortError(
            f"{path}: unsupported score file type '{suffix}'; give .csv, .xlsx or .xlsm"
        )
    frame = frame.rename(columns=lambda c: str(c).strip())
    frame = frame.apply(lambda col: col.astype(str).str.strip())
    frame = frame[~(frame == "").all(axis=1)]  # blank rows
    return frame, source


def _find_column(columns: dict[str, str], aliases: tuple[str, ...]) -> str | None:
    for alias in aliases:
        if alias in columns:
            return columns[alias]
    return None


def _parse_date(text: str) -> str | None:
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    try:
        return pd.Timestamp(match.group(1)).strftime("%Y-%m-%d")
    except ValueError:
        return None


def _grade(text: str) -> float | None | str:
    """The number in a cell; None when empty/NA; the text itself when it is no number."""
    if text in MISSING_TOKENS:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def parse_scores(
    frame: pd.DataFrame, source: str, joint_map: JointMap, ignore_unknown_joints: bool = False
) -> SheetScores:
    """Grades of a sheet read by :func:`read_sheet`, checked and in this project's names."""
    columns = {normalize(c): c for c in frame.columns}
    sheet = _Sheet(frame, source, _key_columns(frame, columns, source))
    totals_by_column: dict[str, str] = {}
    form = "long" if "joint" in columns else "wide"
    if form == "long":
        used = sheet.read_long(columns, joint_map)
    else:
        used = sheet.read_wide(columns, joint_map, totals_by_column)
    ignored = [c for c in frame.columns if c not in used]
    if ignored:
        logger.warning("%s: column(s) ignored (not a key, joint or total): %s", source,
                       ", ".join(ignored))  # fmt: skip
    totals = sheet.read_totals(totals_by_column)
    joints = pd.DataFrame(sheet.records,
                          columns=["i", "joint", "component", "grade", "where", "row"])  # fmt: skip
    sheet.check_repeated_grades(joints)
    if not ignore_unknown_joints:
        sheet.report_unknown_joints()
    skipped = sorted(sheet.unknown_at) if ignore_unknown_joints else []
    sheet.errors.raise_if_any()
    joints = sheet.keyed(joints)
    total_frame = sheet.keyed(pd.DataFrame(totals, columns=["i", *TOTAL_ALIASES]))
    total_frame["row"] = [sheet.where[i] for i in total_frame["i"]]
    if skipped:
        logger.warning("%s: unknown joint(s) skipped (--ignore-unknown-joints): %s", source,
                       ", ".join(skipped))  # fmt: skip
    return SheetScores(joints.drop(columns="i"), total_frame.drop(columns="i"), skipped, form)


def _key_columns(frame: pd.DataFrame, columns: dict[str, str], source: str) -> dict[str, str]:
    """The sheet's column for ``patient_id`` and for ``visit_date``."""
    keys = {key: _find_column(columns, aliases) for key, aliases in KEY_ALIASES.items()}
    missing = [key for key, column in keys.items() if column is None]
    if missing:
        raise CohortError(
            f"{source}: no {' or '.join(missing)} column (columns: {', '.join(frame.columns)}); "
            "a score sheet needs patient_id and visit_date (YYYY-MM-DD) columns"
        )
    return keys


class _Sheet:
    """One pass over a score sheet: rows' keys, the grades found so far, the problems."""

    def __init__(self, frame: pd.DataFrame, source: str, keys: dict[str, str]):
        self.source = source
        self.keys = keys
        self.errors = _Errors(source)
        self.rows = frame.reset_index(drop=True)
        self.where = [f"row {i + 2}" for i in range(len(self.rows))]
        self.patient_ids = self.rows[keys["patient_id"]].tolist()
        self.dates = self._dates()
        self.records: list[dict] = []
        self.unknown_at: dict[str, list[str]] = {}  # unknown joint name -> where it occurs

    def _dates(self) -> list[str | None]:
        dates: list[str | None] = []
        for i, text in enumerate(self.rows[self.keys["visit_date"]]):
            if self.patient_ids[i] == "":
                self.errors.add(self.where[i], f"empty {self.keys['patient_id']}; give the "
                                               "patient's id")  # fmt: skip
            parsed = _parse_date(text)
            if parsed is None:
                self.errors.add(
                    self.where[i],
                    f"{self.keys['visit_date']} '{text}' is not a date in YYYY-MM-DD form; write "
                    "it as YYYY-MM-DD, e.g. 2021-03-15 (or format the Excel column as a date)",
                )
            dates.append(parsed)
        return dates

    def unknown(self, name: str, at: str) -> None:
        self.unknown_at.setdefault(name, []).append(at)

    def grade(self, i: int, column: str, joint: str, component: str, text: str) -> None:
        """Keep the grade in cell (``i``, ``column``) when it is a valid SvdH grade."""
        value = _grade(text)
        if value is None:
            return
        found = joint_by_name(joint)
        cap = found.erosion_max if component == "erosion" else found.jsn_max
        at = f"{self.where[i]} [{column}]"
        if isinstance(value, str):
            self.errors.add(at, f"'{value}' is not a number; write an integer grade or leave it "
                                "empty")  # fmt: skip
        elif cap is None:
            self.errors.add(at, f"{joint} has no {component} component in SvdH; leave it empty")
        elif not (0 <= value <= cap) or value != round(value):
            self.errors.add(at, f"{component} {value:g} for {joint} is not an SvdH grade 0-{cap} "
                                "(integers); correct the grade")  # fmt: skip
        else:
            self.records.append({"i": i, "joint": joint, "component": component, "grade": value,
                                 "where": at, "row": self.where[i]})  # fmt: skip

    def read_long(self, columns: dict[str, str], joint_map: JointMap) -> set[str]:
        """Grades of a long sheet (one row per joint); returns the columns used."""
        rows, keys = self.rows, self.keys
        joint_column = columns["joint"]
        components = {c: columns[c] for c in COMPONENTS if c in columns}
        if not components:
            larsen = [c for c in ("larsen", "grade", "score") if c in columns]
            hint = " (Larsen grades are not stored in format v1 yet)" if larsen else ""
            raise CohortError(
                f"{self.source}: a long sheet (it has a joint column) needs erosion and/or jsn "
                f"columns; columns: {', '.join(rows.columns)}{hint}"
            )
        used = {keys["patient_id"], keys["visit_date"], joint_column, *components.values()}
        for i, name in enumerate(rows[joint_column]):
            for component, column in components.items():
                text = rows.at[i, column]
                if _grade(text) is None:
                    continue
                joint = joint_map.svdh_joint(name, component)
                if joint is None:
                    self.unknown(name, f"{self.where[i]} [{joint_column}]")
                    break
                self.grade(i, column, joint, component, text)
        return used

    def read_wide(
        self, columns: dict[str, str], joint_map: JointMap, totals_by_column: dict[str, str]
    ) -> set[str]:
        """Grades of a wide sheet (one column per joint and component); fills
        ``totals_by_column`` (column -> score column) and returns the columns used."""
        used = {self.keys["patient_id"], self.keys["visit_date"]}
        joint_columns: list[tuple[str, str, str]] = []  # column, joint, component
        for norm, column in columns.items():
            if column in used:
                continue
            total = next((t for t, a in TOTAL_ALIASES.items() if norm in a), None)
            if total is not None:
                totals_by_column[column] = total
                continue
            base, _, suffix = norm.rpartition("_")
            component = COMPONENT_SUFFIXES.get(suffix)
            if not base or component is None:
                continue  # not a score column: reported as ignored
            joint = joint_map.svdh_joint(base, component)
            if joint is None:
                their_name = column.strip()[: -len(suffix)].rstrip("_ .-")
                self.unknown(their_name, f"column '{column}'")
                used.add(column)
                continue
            joint_columns.append((column, joint, component))
        used |= set(totals_by_column) | {c for c, _, _ in joint_columns}
        for i in range(len(self.rows)):
            for column, joint, component in joint_columns:
                self.grade(i, column, joint, component, self.rows.at[i, column])
        return used

    def read_totals(self, totals_by_column: dict[str, str]) -> list[dict]:
        """Per row with any: ``{"i": row index, score column: value, ...}``."""
        totals = []
        for i in range(len(self.rows)):
            given = {}
            for column, total in totals_by_column.items():
                value = _grade(self.rows.at[i, column])
                if value is None:
                    continue
                at = f"{self.where[i]} [{column}]"
                if isinstance(value, str):
                    self.errors.add(at, f"'{value}' is not a number; write the {total} or leave "
                                        "it empty")  # fmt: skip
                elif not 0 <= value <= SCORE_MAX[total]:
                    self.errors.add(at, f"{total} {value:g} is outside 0-{SCORE_MAX[total]} SvdH "
                                        "units; correct it")  # fmt: skip
                else:
                    given[total] = value
            if given:
                totals.append({"i": i, **given})
        return totals

    def check_repeated_grades(self, joints: pd.DataFrame) -> None:
        seen: dict[tuple, str] = {}
        for r in joints.itertuples(index=False):
            key = (self.patient_ids[r.i], self.dates[r.i], r.joint, r.component)
            if key in seen:
                self.errors.add(r.where, f"{r.component} of {r.joint} for patient {key[0]} on "
                                         f"{key[1]} is already given at {seen[key]}; keep one")  # fmt: skip
            seen[key] = r.where

    def report_unknown_joints(self) -> None:
        for name, places in self.unknown_at.items():
            more = f" (and {len(places) - 1} more)" if len(places) > 1 else ""
            site = normalize(name).rsplit("_", 1)[-1]
            self.errors.add(
                f"{places[0]}{more}",
                f"unknown joint '{name}'; add it to a joint map given with --joint-map MAP.yaml "
                f"(e.g. svdh: {{hand: {{both: {{{site}: <SvdH site>}}}}}}; sites in "
                "docs/scoring.md), or pass --ignore-unknown-joints to skip it with a warning",
            )

    def keyed(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table`` (rows indexed by ``i``) with ``patient_id`` and ``visit_date`` in front."""
        table.insert(0, "patient_id", [self.patient_ids[i] for i in table["i"]])
        table.insert(1, "visit_date", [self.dates[i] for i in table["i"]])
        return table
