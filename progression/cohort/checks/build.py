"""From checked text tables to the typed, sorted DataFrames of a Cohort, and its fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from progression.cohort.cells import Table, parse_number
from progression.cohort.checks.covariates import Covariates
from progression.cohort.schema import CohortSchema
from progression.columns import SCORE_COLUMNS


@dataclass
class Parsed:
    """What the checks parsed, kept so the Cohort is built without parsing twice."""

    births: dict[str, date] = field(default_factory=dict)
    visit_dates: list[date | None] = field(default_factory=list)
    image_dates: list[date | None] = field(default_factory=list)
    abs_paths: list[str | None] = field(default_factory=list)
    joint_dates: list[date | None] = field(default_factory=list)
    static: Covariates = field(default_factory=lambda: ({}, {}))
    per_visit: Covariates = field(default_factory=lambda: ({}, {}))


@dataclass
class CohortFrames:
    """The validated tables of one cohort, sorted by patient and date (all but its root).

    - ``patients``: ``patient_id`` (str), ``birth_date`` (datetime64, if given), static
      covariates (float for numeric, str/NaN for categorical).
    - ``visits``: ``patient_id``, ``visit_date`` (datetime64), ``svdh_total``,
      ``svdh_erosion``, ``svdh_jsn`` (float SvdH units, NaN = not scored), time-varying
      covariates.
    - ``images``: ``patient_id``, ``visit_date``, ``region``, ``path`` (as written,
      relative to the cohort's root), ``abs_path`` (absolute path string).
    - ``joint_scores``: ``patient_id``, ``visit_date``, ``joint``, ``erosion``, ``jsn``
      (float grades, NaN where not scored), or None when the cohort has none.

    ``fingerprint`` is a stable hash of the tables and of each image file's size and
    modification time: log it with a run to know exactly which data it saw.
    """

    patients: pd.DataFrame
    visits: pd.DataFrame
    images: pd.DataFrame
    joint_scores: pd.DataFrame | None
    schema: CohortSchema
    fingerprint: str


def build_parts(
    patients: Table,
    visits: Table,
    images: Table,
    joints: Table | None,
    parsed: Parsed,
    image_stats: dict[str, tuple[int, int]],
    total_column: str = "svdh_total",
) -> CohortFrames:
    """The cohort's DataFrames (sorted by patient and date), schema and fingerprint.

    ``total_column``: the visit total's column in visits.csv (``larsen_total`` in a Larsen
    cohort); its values become the visits' ``svdh_total``, the score the model forecasts.
    """
    patients_df = _patients_frame(patients, parsed)
    visits_df = _visits_frame(visits, parsed, total_column)
    images_df = _images_frame(images, parsed)
    joints_df = None if joints is None else _joints_frame(joints, parsed)
    schema = CohortSchema(
        static_numeric=tuple(parsed.static[0]),
        static_categorical=tuple(parsed.static[1]),
        visit_numeric=tuple(parsed.per_visit[0]),
        visit_categorical=tuple(parsed.per_visit[1]),
        levels={k: tuple(v) for k, v in {**parsed.static[1], **parsed.per_visit[1]}.items()},
    )
    return CohortFrames(
        patients=patients_df,
        visits=visits_df,
        images=images_df,
        joint_scores=joints_df,
        schema=schema,
        fingerprint=fingerprint(patients_df, visits_df, images_df, joints_df, image_stats),
    )


def _covariate_columns(table: Table, covariates: Covariates) -> dict[str, object]:
    numeric, categorical = covariates
    out: dict[str, object] = {}
    for column in table.frame.columns:
        if column in numeric:
            out[column] = np.asarray(numeric[column], dtype=np.float64)
        elif column in categorical:
            out[column] = [c if c else np.nan for c in table.frame[column]]
    return out


def _patients_frame(patients: Table, parsed: Parsed) -> pd.DataFrame:
    pat: dict[str, object] = {"patient_id": patients.frame["patient_id"].astype(str).tolist()}
    if patients.has("birth_date"):
        pat["birth_date"] = pd.to_datetime([parsed.births.get(p) for p in pat["patient_id"]])
    pat.update(_covariate_columns(patients, parsed.static))
    return pd.DataFrame(pat).sort_values("patient_id", kind="stable").reset_index(drop=True)


def _visits_frame(visits: Table, parsed: Parsed, total_column: str) -> pd.DataFrame:
    vis: dict[str, object] = {
        "patient_id": visits.frame["patient_id"].astype(str).tolist(),
        "visit_date": pd.to_datetime(parsed.visit_dates),
    }
    given = {"svdh_total": total_column}  # a Larsen total is the score forecast
    for column in SCORE_COLUMNS:
        source = given.get(column, column)
        vis[column] = (
            np.asarray([parse_number(c)[0] for c in visits.frame[source]], dtype=np.float64)
            if visits.has(source)
            else np.full(len(visits.frame), np.nan)
        )
    # A visit scored by component only still has a total (erosion + JSN).
    fill = np.isnan(vis["svdh_total"]) & ~np.isnan(vis["svdh_erosion"]) & ~np.isnan(vis["svdh_jsn"])
    vis["svdh_total"] = np.where(fill, vis["svdh_erosion"] + vis["svdh_jsn"], vis["svdh_total"])
    vis.update(_covariate_columns(visits, parsed.per_visit))
    return (
        pd.DataFrame(vis)
        .sort_values(["patient_id", "visit_date"], kind="stable")
        .reset_index(drop=True)
    )


def _images_frame(images: Table, parsed: Parsed) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "patient_id": images.frame["patient_id"].astype(str).tolist(),
            "visit_date": pd.to_datetime(pd.Series(parsed.image_dates, dtype=object)),
            "region": images.frame["region"].tolist(),
            "path": [p.replace("\\", "/") for p in images.frame["path"]],
            "abs_path": parsed.abs_paths,
        }
    )
    return frame.sort_values(
        ["patient_id", "visit_date", "region"], kind="stable"
    ).reset_index(drop=True)


def _joints_frame(joints: Table, parsed: Parsed) -> pd.DataFrame:
    return (
        pd.DataFrame(
            {
                "patient_id": joints.frame["patient_id"].astype(str).tolist(),
                "visit_date": pd.to_datetime(pd.Series(parsed.joint_dates, dtype=object)),
                "joint": joints.frame["joint"].tolist(),
                "erosion": [parse_number(c)[0] for c in joints.frame["erosion"]],
                "jsn": [parse_number(c)[0] for c in joints.frame["jsn"]],
            }
        )
        .sort_values(["patient_id", "visit_date", "joint"], kind="stable")
        .reset_index(drop=True)
    )


def fingerprint(patients, visits, images, joints, image_stats: dict[str, tuple[int, int]]) -> str:
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
