"""One patient's request as the format-v1 tables ``predict`` reads, and its answer back.

Films by path are confined to the image root (:func:`~progression.serve.safety.confined_path`);
uploaded films are written to a private temporary directory that the caller removes after the
forecast. Covariate names and kinds are checked against what the loaded model reads, so a
misspelt biomarker is a 422 naming it rather than a silently missing input.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from progression.serve.predictor import Film, Predictor
from progression.serve.safety import RequestProblem, confined_path
from progression.serve.schemas import ForecastRequest, ForecastResponse, HorizonForecast

if TYPE_CHECKING:
    from progression.cohort import Cohort


def count_films(request: ForecastRequest) -> int:
    return sum(len(v.images) for v in request.visits)


def _covariates(values: dict, allowed: list[str], numeric: set[str], where: str) -> dict:
    for name, value in values.items():
        field = f"{where}.{name}"
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise RequestProblem(422, field, f"{field}: this model does not read '{name}' here; "
                                             f"its covariates at this level are: {known}")
        if name in numeric and value is not None and not isinstance(value, int | float):
            raise RequestProblem(422, field, f"{field}: '{name}' is numeric; send a number or null")
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestProblem(422, field, f"{field}: send a finite number or null")
    return values


def to_tables(request: ForecastRequest, predictor: Predictor, image_root: Path | None,
              upload_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[Film]]:
    """(patients, visits, films) of the request; uploads are written under ``upload_dir``."""
    spec = predictor.spec
    numeric = {c.name for c in spec.static_numeric + spec.visit_numeric}
    patient = request.patient
    static = _covariates(patient.covariates, predictor.static_covariates, numeric,
                         "patient.covariates")
    patients = pd.DataFrame([{
        "patient_id": patient.patient_id,
        **({"birth_date": patient.birth_date.isoformat()} if patient.birth_date else {}),
        **{name: static.get(name) for name in predictor.static_covariates},
    }])
    rows, films = [], []
    for i, visit in enumerate(request.visits):
        covs = _covariates(visit.covariates, predictor.visit_covariates, numeric,
                           f"visits.{i}.covariates")
        day = visit.visit_date.isoformat()
        rows.append({"patient_id": patient.patient_id, "visit_date": day,
                     "svdh_total": visit.svdh_total, "svdh_erosion": visit.svdh_erosion,
                     "svdh_jsn": visit.svdh_jsn,
                     **{name: covs.get(name) for name in predictor.visit_covariates}})
        for k, film in enumerate(visit.images):
            field = f"visits.{i}.images.{k}"
            if film.path is not None:
                path = confined_path(image_root, film.path, f"{field}.path")
            else:
                path = str(upload_dir / f"{i}_{k}.{film.format}")
                try:
                    data = base64.b64decode(film.data_base64, validate=True)
                except (binascii.Error, ValueError):
                    raise RequestProblem(422, f"{field}.data_base64",
                                         f"{field}.data_base64: not valid base64") from None
                Path(path).write_bytes(data)
            films.append(Film(day, film.region, path, field))
    visits = pd.DataFrame(rows)
    return patients, visits, films


def to_response(frame: pd.DataFrame, predictor: Predictor) -> ForecastResponse:
    """The predictions table of one patient as the JSON answer (same numbers, same names)."""
    first = frame.iloc[0]
    index_date = first["index_date"]
    return ForecastResponse(
        patient_id=str(first["patient_id"]),
        index_date=None if index_date is None or pd.isna(index_date) else str(index_date),
        interval_level=predictor.interval_level,
        model_version=predictor.version,
        forecasts=[HorizonForecast(
            horizon_years=row.horizon_years, svdh_index_pred=row.svdh_index_pred,
            delta_svdh_pred=row.delta_svdh_pred, delta_svdh_lo=row.delta_svdh_lo,
            delta_svdh_hi=row.delta_svdh_hi, p_rapid=row.p_rapid, risk_score=row.risk_score,
            note=str(row.note or "")) for row in frame.itertuples()],
    )


def request_from_cohort(cohort: Cohort, patient_id: str, horizons: Sequence[float] = (1.0, 2.0),
                        covariates: tuple[list[str], list[str]] | None = None) -> dict:
    """The request body (JSON-ready dict) for one patient of a format-v1 :class:`Cohort`, with
    films by path relative to the cohort directory (serve it with ``--image-root`` there).

    ``covariates``: (static, per-visit) names to send (default: every covariate column).
    Totals come from visits.csv; joint_scores.csv is not sent.
    """
    pid = str(patient_id)
    patient = cohort.patients[cohort.patients["patient_id"] == pid].iloc[0]
    visits = cohort.visits[cohort.visits["patient_id"] == pid]
    images = cohort.images[cohort.images["patient_id"] == pid]
    static, per_visit = covariates or (
        [*cohort.schema.static_numeric, *cohort.schema.static_categorical],
        [*cohort.schema.visit_numeric, *cohort.schema.visit_categorical])

    def present(row, names) -> dict:
        return {n: (row[n].item() if hasattr(row[n], "item") else row[n])
                for n in names if n in row.index and not pd.isna(row[n])}

    body_patient = {"patient_id": pid, "covariates": present(patient, static)}
    if "birth_date" in patient.index and not pd.isna(patient["birth_date"]):
        body_patient["birth_date"] = pd.Timestamp(patient["birth_date"]).date().isoformat()
    body_visits = []
    for _, visit in visits.iterrows():
        day = pd.Timestamp(visit["visit_date"])
        films = images[pd.to_datetime(images["visit_date"]) == day]
        body_visits.append({
            "visit_date": day.date().isoformat(),
            **present(visit, ["svdh_total", "svdh_erosion", "svdh_jsn"]),
            "covariates": present(visit, per_visit),
            "images": [{"region": f.region, "path": str(f.path)} for f in films.itertuples()],
        })
    return {"patient": body_patient, "visits": body_visits, "horizons": list(horizons)}
