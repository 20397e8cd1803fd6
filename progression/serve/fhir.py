"""A forecast as HL7 FHIR R4: a ``RiskAssessment`` with the predicted SvdH change as
contained ``Observation`` resources, built and validated with ``fhir.resources``.

``fhir.resources`` 8 defaults to R5; its ``R4B`` package (FHIR 4.3) has the R4 shape of
RiskAssessment and Observation used here, so the output reads as R4 (4.0.1) too.

Mapping (one prediction and one Observation per horizon):

- ``RiskAssessment.prediction.outcome``: "rapid radiographic progression" (SvdH >= 5
  units/year); ``probabilityDecimal`` = ``p_rapid``; ``whenRange`` = 0 to the horizon, years
  (UCUM ``a``) after ``occurrenceDateTime`` = the index visit.
- ``Observation.valueQuantity`` = ``delta_svdh_pred`` (SvdH units); ``component`` = the
  interval ends ``delta_svdh_lo`` / ``delta_svdh_hi`` and ``svdh_index_pred``; referenced from
  ``RiskAssessment.basis`` and ``prediction.rationale`` names it.
- ``RiskAssessment.method`` names the model version; ``note`` carries the forecast's note.
"""

from __future__ import annotations

from fhir.resources.R4B.riskassessment import RiskAssessment

from progression.scoring import RAPID_RATE
from progression.serve.schemas import ForecastResponse

FHIR_MEDIA_TYPE = "application/fhir+json"
SYSTEM = "urn:progression:code"  # the project's local code system
UCUM = "http://unitsofmeasure.org"


def _score(value: float) -> dict:
    return {"value": round(float(value), 6), "unit": "SvdH units", "system": UCUM,
            "code": "{score}"}


def _years(value: float) -> dict:
    return {"value": float(value), "unit": "years", "system": UCUM, "code": "a"}


def _concept(code: str, text: str) -> dict:
    return {"coding": [{"system": SYSTEM, "code": code, "display": text}], "text": text}


def _observation(obs_id: str, answer: ForecastResponse, f, subject: dict) -> dict:
    level = round(100 * answer.interval_level)
    obs = {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "preliminary",  # a model's forecast, not a measurement
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                  "observation-category", "code": "imaging"}]}],
        "code": _concept("svdh-total-change-forecast",
                         f"Predicted change in Sharp/van der Heijde total score over "
                         f"{f.horizon_years:g} years"),
        "subject": subject,
        "valueQuantity": _score(f.delta_svdh_pred),
        "method": {"text": f"progression model {answer.model_version}"},
        "component": [
            {"code": _concept("delta-svdh-lo", f"lower end of the {level}% prediction interval"),
             "valueQuantity": _score(f.delta_svdh_lo)},
            {"code": _concept("delta-svdh-hi", f"upper end of the {level}% prediction interval"),
             "valueQuantity": _score(f.delta_svdh_hi)},
            {"code": _concept("svdh-index-pred", "SvdH total read at the index visit"),
             "valueQuantity": _score(f.svdh_index_pred)},
        ],
    }
    if answer.index_date:
        obs["effectiveDateTime"] = answer.index_date
    if f.note:
        obs["note"] = [{"text": f.note}]
    return obs


def risk_assessment(answer: ForecastResponse) -> dict:
    """The FHIR R4 RiskAssessment (JSON-ready dict) of one answer, validated on the way."""
    subject = {"identifier": {"system": "urn:progression:patient_id", "value": answer.patient_id},
               "display": answer.patient_id}
    contained, predictions, basis = [], [], []
    for k, f in enumerate(answer.forecasts):
        obs_id = f"delta-{k}"
        contained.append(_observation(obs_id, answer, f, subject))
        basis.append({"reference": f"#{obs_id}"})
        predictions.append({
            "outcome": _concept("rapid-radiographic-progression",
                                f"rapid radiographic progression (SvdH >= {RAPID_RATE:g} "
                                "units/year)"),
            "probabilityDecimal": round(float(f.p_rapid), 6),
            "whenRange": {"low": _years(0.0), "high": _years(f.horizon_years)},
            "rationale": f"predicted SvdH change {f.delta_svdh_pred:.2f} units "
                         f"({f.delta_svdh_lo:.2f} to {f.delta_svdh_hi:.2f}) over "
                         f"{f.horizon_years:g} years; see #{obs_id}",
        })
    resource = {
        "resourceType": "RiskAssessment",
        "status": "preliminary",
        "contained": contained,
        "subject": subject,
        "code": _concept("svdh-progression-forecast", "radiographic progression forecast (SvdH)"),
        "method": {"coding": [{"system": SYSTEM, "code": "progression-model",
                               "version": answer.model_version,
                               "display": "progression forecasting model"}],
                   "text": f"progression model {answer.model_version}"},
        "basis": basis,
        "prediction": predictions,
    }
    if answer.index_date:
        resource["occurrenceDateTime"] = answer.index_date
    notes = sorted({f.note for f in answer.forecasts if f.note})
    if notes:
        resource["note"] = [{"text": n} for n in notes]
    return RiskAssessment.model_validate(resource).model_dump(mode="json", exclude_none=True)
