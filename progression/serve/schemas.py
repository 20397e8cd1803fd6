"""Request and response bodies of the service (pydantic), with the examples OpenAPI shows.

A request is one patient's history in the words of cohort format v1 (docs/cohort_format.md):
static covariates, visits with dates, scores and biomarkers where known, and up to four films
per visit, each either a ``path`` under the service's ``--image-root`` or the file itself as
base64 (``data_base64``, DICOM/PNG/TIFF/JPEG bytes). Shape checks live here, so a malformed
field is answered 422 naming it; checks that need the loaded model (which covariates it
reads) and the image root are made by the app.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from progression.scoring import REGIONS

Region = Literal["hand_left", "hand_right", "foot_left", "foot_right"]
assert set(Region.__args__) == set(REGIONS)  # one vocabulary: progression.scoring
Covariate = float | str | None
MAX_HORIZON_YEARS = 10.0
FILM_FORMATS = ("dcm", "png", "tif", "jpg")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is a 422, not silently ignored


class FilmIn(_Strict):
    """One radiograph: exactly one of ``path`` (under --image-root) or ``data_base64``."""

    region: Region
    path: str | None = Field(None, min_length=1, max_length=1024,
                             description="file path relative to the service's --image-root")
    data_base64: str | None = Field(None, min_length=1,
                                    description="the file's bytes, base64 (standard alphabet)")
    format: Literal["dcm", "png", "tif", "jpg"] | None = Field(
        None, description="file type of data_base64: dcm (DICOM), png, tif or jpg")

    @model_validator(mode="after")
    def _one_source(self) -> FilmIn:
        if (self.path is None) == (self.data_base64 is None):
            raise ValueError("give exactly one of 'path' (under the image root) or "
                             "'data_base64' (with 'format')")
        if self.data_base64 is not None and self.format is None:
            raise ValueError("'data_base64' needs 'format' (dcm, png, tif or jpg)")
        return self


class VisitIn(_Strict):
    visit_date: date = Field(description="YYYY-MM-DD")
    svdh_total: float | None = Field(None, ge=0, le=448, description="SvdH total, units")
    svdh_erosion: float | None = Field(None, ge=0, le=280, description="SvdH erosion, units")
    svdh_jsn: float | None = Field(None, ge=0, le=168, description="SvdH JSN, units")
    covariates: dict[str, Covariate] = Field(
        default_factory=dict, description="time-varying covariates by name (crp mg/L, ...)")
    images: list[FilmIn] = Field(default_factory=list, max_length=len(REGIONS))

    @field_validator("images")
    @classmethod
    def _one_film_per_region(cls, films: list[FilmIn]) -> list[FilmIn]:
        regions = [f.region for f in films]
        repeated = sorted({r for r in regions if regions.count(r) > 1})
        if repeated:
            raise ValueError(f"one film per region and visit; repeated: {', '.join(repeated)}")
        return films


class PatientIn(_Strict):
    patient_id: str = Field("patient", min_length=1, max_length=64,
                            pattern=r"^[A-Za-z0-9._-]+$",
                            description="echoed back; no name or record number is needed")
    birth_date: date | None = Field(None, description="YYYY-MM-DD; gives age at each visit")
    covariates: dict[str, Covariate] = Field(
        default_factory=dict, description="static covariates by name (sex, rf, acpa, ...)")


class ForecastRequest(_Strict):
    patient: PatientIn = Field(default_factory=PatientIn)
    visits: list[VisitIn] = Field(min_length=1, max_length=200)
    horizons: list[float] = Field([1.0, 2.0], min_length=1, max_length=10,
                                  description="years after the index visit")

    @field_validator("visits")
    @classmethod
    def _distinct_dates(cls, visits: list[VisitIn]) -> list[VisitIn]:
        dates = [v.visit_date for v in visits]
        repeated = sorted({d.isoformat() for d in dates if dates.count(d) > 1})
        if repeated:
            raise ValueError(f"one visit per date; repeated: {', '.join(repeated)}")
        return visits

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, horizons: list[float]) -> list[float]:
        bad = [h for h in horizons if not 0 < h <= MAX_HORIZON_YEARS]
        if bad:
            raise ValueError(f"horizons are years in (0, {MAX_HORIZON_YEARS:g}]; got {bad}")
        return horizons

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "patient": {"patient_id": "P0001", "birth_date": "1968-07-10",
                    "covariates": {"sex": "M", "rf": 0, "acpa": 1, "smoker": 0}},
        "visits": [
            {"visit_date": "2012-10-09", "svdh_total": 7, "svdh_erosion": 3, "svdh_jsn": 4,
             "covariates": {"crp": 9.6, "das28": 4.1, "haq": 1.25, "treatment": "none"},
             "images": [{"region": "hand_left", "path": "P0001/2012-10-09_hand_left.png"},
                        {"region": "hand_right", "data_base64": "<base64 of a .dcm file>",
                         "format": "dcm"}]},
            {"visit_date": "2013-09-28", "covariates": {"crp": 1.7, "treatment": "csdmard"}},
        ],
        "horizons": [1.0, 2.0],
    }]})


class HorizonForecast(BaseModel):
    horizon_years: float
    svdh_index_pred: float = Field(description="SvdH total read at the index visit, units")
    delta_svdh_pred: float = Field(description="predicted SvdH change over the horizon, units")
    delta_svdh_lo: float = Field(description="lower end of the prediction interval, units")
    delta_svdh_hi: float = Field(description="upper end of the prediction interval, units")
    p_rapid: float = Field(description="probability of rapid progression (>= 5 units/year)")
    risk_score: float = Field(description="predicted SvdH units/year")
    note: str = Field(description="empty, or why the forecast is degraded")


class ForecastResponse(BaseModel):
    patient_id: str
    index_date: str | None = Field(description="last visit with a film (else last visit)")
    interval_level: float = Field(description="central coverage of [lo, hi], e.g. 0.9")
    model_version: str
    forecasts: list[HorizonForecast]

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "patient_id": "P0001", "index_date": "2013-09-28", "interval_level": 0.9,
        "model_version": "sha256:0f3c5a9e41b27d88",
        "forecasts": [{"horizon_years": 1.0, "svdh_index_pred": 7.4, "delta_svdh_pred": 1.8,
                       "delta_svdh_lo": 0.2, "delta_svdh_hi": 4.9, "p_rapid": 0.07,
                       "risk_score": 1.8, "note": ""}],
    }]})


class ModelInfo(BaseModel):
    model_version: str = Field(description="sha256 of the checkpoint file (first 16 hex digits)")
    source: str = Field(description="MLflow URI, or the checkpoint's file name")
    mlflow_run_id: str | None
    training_data_fingerprint: str | None = Field(description="the training cohort's fingerprint")
    config: dict = Field(description="what shapes the answers: backbone, image size, covariates")
    calibration: dict = Field(description="conformal interval correction, if the model has one")
    model_card: str | None = Field(description="where the model card is served, if found")


class ErrorBody(BaseModel):
    status: int
    field: str | None = Field(description="the request field at fault, dotted (visits.0.images)")
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
    request_id: str
