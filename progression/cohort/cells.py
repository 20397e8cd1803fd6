"""A cohort table as text cells: every cell a stripped string, every row its file line.

Every cell is read as text and parsed by the checks, so a problem is reported with the line
the user sees in the file (header = line 1). A DataFrame goes through the same path
(:func:`table_from_frame`), so in-memory tables get the same checks as CSV files.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from progression.cohort.format import KEY_COLUMNS, MISSING_TOKENS
from progression.cohort.problems import ValidationReport


@dataclass
class Table:
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


def _read_text(path: Path, file: str, report: ValidationReport) -> str | None:
    """The file as UTF-8 text (BOM dropped), or None with the problem reported."""
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
    return text


def read_csv_table(path: Path, file: str, report: ValidationReport) -> Table | None:
    """``path`` as a Table, or None with the problem reported (unreadable, not CSV text)."""
    text = _read_text(path, file, report)
    if text is None:
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
                if not header_ok(header, file, report):
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
            rows.append([clean(cell) for cell in record])
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
    return Table(file, file, frame, np.asarray(lines, dtype=np.int64))


def header_ok(header: list[str], file: str, report: ValidationReport) -> bool:
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


def clean(cell: str) -> str:
    cell = cell.strip()
    return "" if cell in MISSING_TOKENS else cell


def table_from_frame(frame: pd.DataFrame, kind: str, report: ValidationReport) -> Table | None:
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
        return clean(str(value))

    columns = [str(c).strip() for c in frame.columns]
    if not header_ok(columns, file, report):
        return None
    rows = [[text(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    out = pd.DataFrame(rows, columns=columns, dtype=object)
    return Table(kind, file, out, np.arange(len(out), dtype=np.int64))


def parse_number(text: str) -> tuple[float, str | None]:
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
