"""What evaluation reads: a cohort, predictions tables, outcomes tables and index dates.

Everything here is plain pandas so that a user can build or inspect each table by hand:

* the cohort is a :class:`progression.cohort.Cohort` (format v1, read and checked once);
* a predictions table has the columns of :data:`PREDICTION_COLUMNS`
  (docs/architecture.md), one row per patient x horizon;
* an outcomes table has the columns of :data:`OUTCOME_COLUMNS` (docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from progression.cohort import Cohort, read_cohort
from progression.columns import OUTCOME_COLUMNS, PREDICTION_COLUMNS
from progression.errors import ProgressionError


def horizon_label(h: float) -> str:
    """``1.0`` -> ``"1y"``, ``0.5`` -> ``"0.5y"`` (metric-name suffix)."""
    return f"{float(h):g}y"


def load_cohort(cohort: Cohort | str | Path) -> Cohort:
    """A cohort directory (read with ``read_cohort``, images checked) or a ``Cohort`` as is."""
    if isinstance(cohort, Cohort):
        return cohort
    if isinstance(cohort, str | Path):
        return read_cohort(cohort)
    raise ProgressionError(
        f"expected a cohort directory or a progression.cohort.Cohort, got {type(cohort).__name__}"
    )


def read_tables(root: str | Path) -> Cohort:
    """A cohort's patients and visits, without images.csv or any image file.

    For scoring baselines and predictions tables, which never look at radiographs: e.g. a
    simulated cohort written with ``render_images=False`` (its images.csv names files that
    were never rendered). The tables get the same checks as :func:`read_cohort`; index dates
    must then come from the outcomes (the default rule needs to know which visits had films).
    """
    root = Path(root)
    frames = []
    for name in ("patients.csv", "visits.csv"):
        if not (root / name).is_file():
            raise ProgressionError(f"cohort '{root}' has no {name}; give a format-v1 cohort")
        frames.append(pd.read_csv(root / name, dtype=str, keep_default_na=False, na_values=[""]))
    return Cohort.from_frames(frames[0], frames[1], None, root=root)


def default_index_dates(cohort: Cohort) -> pd.Series:
    """Each patient's index date: the last visit with an image, else the last visit.

    This is the predictions-table rule of docs/architecture.md; a Series indexed by patient_id.
    """
    last_visit = cohort.visits.groupby("patient_id")["visit_date"].max()
    last_image = cohort.images.groupby("patient_id")["visit_date"].max()
    index = last_image.reindex(last_visit.index).fillna(last_visit)
    index.name = "index_date"
    return index


def as_index_dates(index_dates: Mapping[str, Any] | pd.Series | pd.DataFrame | None,
                   cohort: Cohort) -> pd.Series:
    """Index dates per patient as a timestamp Series; ``None`` = :func:`default_index_dates`.

    Accepts a mapping or Series ``patient_id -> date``, or a frame with ``patient_id`` and
    ``index_date`` columns (e.g. an outcomes table).
    """
    if index_dates is None:
        return default_index_dates(cohort)
    if isinstance(index_dates, pd.DataFrame):
        index_dates = index_dates.drop_duplicates("patient_id").set_index("patient_id")["index_date"]
    series = pd.Series(index_dates, dtype=object)
    series.index = series.index.astype(str)
    return pd.to_datetime(series).rename("index_date")


def _read_csv(path: Path, what: str, required: tuple[str, ...], fix: str) -> pd.DataFrame:
    if not path.is_file():
        raise ProgressionError(f"{what} file '{path}' not found; {fix}")
    try:
        frame = pd.read_csv(path, dtype={"patient_id": str, "note": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ProgressionError(f"{what} file '{path}' is not a readable CSV ({exc}); {fix}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ProgressionError(
            f"{what} file '{path}' lacks column(s) {', '.join(missing)}; it needs "
            f"{', '.join(required)}"
        )
    return frame


def _check_numeric(frame: pd.DataFrame, columns: tuple[str, ...], path: Path, what: str) -> None:
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        # inf parses as a number but no forecast or outcome can be infinite
        bad = (values.isna() & frame[column].notna()) | np.isinf(values)
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # header is line 1
            raise ProgressionError(
                f"{what} file '{path}' line {line}, column {column}: "
                f"{frame[column].iloc[line - 2]!r} is not a finite number; write a number or "
                "leave it empty"
            )
        frame[column] = values


def _check_dates(frame: pd.DataFrame, path: Path, what: str) -> None:
    parsed = pd.to_datetime(frame["index_date"], errors="coerce", format="%Y-%m-%d")
    bad = parsed.isna()
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise ProgressionError(
            f"{what} file '{path}' line {line}, column index_date: "
            f"{frame['index_date'].iloc[line - 2]!r} is not a date; write YYYY-MM-DD"
        )
    frame["index_date"] = parsed


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions table (CSV) and check its columns, numbers and dates."""
    path = Path(path)
    frame = _read_csv(path, "predictions", PREDICTION_COLUMNS,
                      "write one with `progression predict`")
    _check_numeric(frame, ("horizon_years", "svdh_index_pred", "delta_svdh_pred", "delta_svdh_lo",
                           "delta_svdh_hi", "p_rapid", "risk_score"), path, "predictions")
    _check_dates(frame, path, "predictions")
    frame["note"] = frame["note"].fillna("")
    return frame


def read_outcomes(path: str | Path) -> pd.DataFrame:
    """Read an outcomes table (CSV, docs/evaluation.md) and check its columns and values.

    ``time_to_event_years`` and ``event`` may be empty (no survival analysis for that
    patient); ``event`` is 1 (progressed) or 0 (censored).
    """
    path = Path(path)
    frame = _read_csv(path, "outcomes", OUTCOME_COLUMNS[:4],
                      "write one with the columns of docs/evaluation.md, or leave --outcomes "
                      "out to derive them from the cohort")
    for column in OUTCOME_COLUMNS[4:]:
        if column not in frame.columns:
            frame[column] = np.nan
    _check_numeric(frame, ("horizon_years", "delta_svdh_obs", "time_to_event_years", "event"),
                   path, "outcomes")
    _check_dates(frame, path, "outcomes")
    bad = frame["event"].notna() & ~frame["event"].isin([0, 1])
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise ProgressionError(
            f"outcomes file '{path}' line {line}, column event: must be 1 (progressed), "
            "0 (censored) or empty"
        )
    return frame[list(OUTCOME_COLUMNS)]
