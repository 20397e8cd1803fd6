"""The ASGI application: routes, the one JSON error shape, request ids and access logging.

:func:`create_app` wraps a loaded :class:`~progression.serve.predictor.Predictor`; the model is
never loaded per request. The forecast runs in a worker thread (films decoded in the
predictor's pool) under a per-request timeout. Logs carry the request id, path, status and
latency only: no patient data, no request bodies, and no traceback unless ``-v`` is given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from progression.errors import ProgressionError
from progression.serve.adapter import count_films, to_response, to_tables
from progression.serve.fhir import FHIR_MEDIA_TYPE, risk_assessment
from progression.serve.predictor import FilmError, Predictor
from progression.serve.safety import (
    BodyLimit,
    RequestProblem,
    error_payload,
    token_matches,
)
from progression.serve.schemas import ErrorResponse, ForecastRequest, ForecastResponse, ModelInfo

logger = logging.getLogger("progression.serve")
OPEN_PATHS = ("/healthz", "/readyz", "/docs", "/openapi.json")
_ERRORS = {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
           413: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
           504: {"model": ErrorResponse}}


@dataclass(frozen=True)
class Limits:
    """Per-request limits: body size (bytes), films per request, forecast time (seconds)."""

    max_body_bytes: int = 32 * 2**20
    max_images: int = 48
    timeout_s: float = 30.0


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "-")


def _error(request: Request, status: int, field: str | None, message: str,
           headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_payload(status, field, message, _request_id(request)),
                        status_code=status, headers=headers)


_UNION_TAGS = frozenset({"float", "int", "str", "bool", "none"})


def _field(loc: tuple) -> str:
    """pydantic's location as a dotted field (visits.0.visit_date), without the 'body' prefix,
    validator names or the union branch tried last (covariates.crp.float -> covariates.crp)."""
    parts = [str(p) for p in loc if p != "body" and not str(p).startswith("function-")]
    while len(parts) > 1 and parts[-1] in _UNION_TAGS:
        parts.pop()
    return ".".join(parts) or "body"


def model_info(predictor: Predictor) -> dict:
    meta, cfg = predictor.meta, predictor.cfg
    source = predictor.source
    if "://" not in source and ":/" not in source:
        source = Path(source).name  # no absolute path of the serving machine in answers
    calibration = dict(meta.calibration or {})
    return {
        "model_version": predictor.version,
        "source": source,
        "mlflow_run_id": meta.mlflow.get("run_id"),
        "training_data_fingerprint": meta.cohort_fingerprint,
        "config": {
            "backbone": cfg.model.backbone if cfg.model.use_images else None,
            "use_images": cfg.model.use_images,
            "image_size": cfg.data.image_size,
            "seq_model": cfg.model.seq_model,
            "interval_level": predictor.interval_level,
            "static_covariates": predictor.static_covariates,
            "visit_covariates": predictor.visit_covariates,
        },
        "calibration": {"calibrated": bool(calibration), **calibration,
                        "unscored_histories": meta.calibration_unscored},
        "model_card": "/v1/model/card" if model_card_path(predictor) else None,
    }


def model_card_path(predictor: Predictor) -> Path | None:
    """MODEL_CARD.md that `progression train` writes next to the run's checkpoints folder."""
    card = predictor.path.parent.parent / "MODEL_CARD.md"
    return card if card.is_file() else None


def create_app(predictor: Predictor, image_root: Path | None = None, token: str | None = None,
               limits: Limits = Limits()):
    """The service as an ASGI app (FastAPI inside the size limit and request logging)."""
    app = FastAPI(
        title="progression forecasts",
        version=predictor.version,
        summary="SvdH radiographic progression forecasts for one patient, as JSON or FHIR R4",
        redoc_url=None,
    )
    _require_token(app, token)
    _answer_errors_as_json(app)
    _add_model_routes(app, predictor)
    _add_forecast_route(app, predictor, image_root, limits)
    return RequestLog(BodyLimit(app, limits.max_body_bytes), app)


def _require_token(app: FastAPI, token: str | None) -> None:
    """Every path but OPEN_PATHS needs ``Authorization: Bearer <token>`` when a token is set."""

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if token is not None and request.url.path not in OPEN_PATHS and not token_matches(
                request.headers.get("authorization"), token):
            return _error(request, 401, "Authorization",
                          "send the header 'Authorization: Bearer <token>' with the token of "
                          "the service's --token-file", {"WWW-Authenticate": "Bearer"})
        return await call_next(request)


def _answer_errors_as_json(app: FastAPI) -> None:
    """Every error in the one JSON shape of :func:`error_payload`, never a traceback."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]  # one clear error; the input value is never echoed
        field = _field(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        more = len(exc.errors()) - 1
        suffix = f" ({more} more problem(s) in this request)" if more else ""
        return _error(request, 422, field, f"{field}: {message}{suffix}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(request, exc.status_code, None, str(exc.detail))

    @app.exception_handler(RequestProblem)
    async def refused(request: Request, exc: RequestProblem):
        return _error(request, exc.status, exc.field, exc.message)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        logger.error("request %s failed: %s", _request_id(request), type(exc).__name__)
        logger.debug("request %s traceback", _request_id(request), exc_info=exc)
        return _error(request, 500, None, "internal error; the service log names this request id")


def _add_model_routes(app: FastAPI, predictor: Predictor) -> None:
    """Health, readiness and what model answers (computed once: the model never changes)."""
    info = model_info(predictor)

    @app.get("/healthz", summary="the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="the model is loaded and answers forecasts")
    async def readyz() -> dict:
        return {"ready": True, "model_version": predictor.version}

    @app.get("/v1/model", response_model=ModelInfo, responses=_ERRORS,
             summary="which model answers: version, training data, config, calibration")
    async def model() -> dict:
        return info

    @app.get("/v1/model/card", response_class=PlainTextResponse, responses=_ERRORS,
             summary="the model card (Markdown) written when the model was trained")
    async def card() -> PlainTextResponse:
        path = model_card_path(predictor)
        if path is None:
            raise RequestProblem(404, None, "this model has no MODEL_CARD.md next to its run; "
                                            "write one with `progression explain --model-card`")
        return PlainTextResponse(path.read_text(), media_type="text/markdown")


def _add_forecast_route(app: FastAPI, predictor: Predictor, image_root: Path | None,
                        limits: Limits) -> None:
    """POST /v1/forecast: the forecast in a worker thread under ``limits``."""

    @app.post("/v1/forecast", response_model=ForecastResponse, responses={
        **_ERRORS, 200: {"content": {FHIR_MEDIA_TYPE: {}},
                         "description": "JSON, or a FHIR R4 RiskAssessment with "
                                        "?format=fhir or Accept: application/fhir+json"}},
        summary="forecast one patient's SvdH change, as predict does")
    async def forecast(request: Request, body: ForecastRequest,
                       format: str = Query("json", pattern="^(json|fhir)$",  # noqa: A002
                                           description="json, or fhir for a RiskAssessment")):
        films = count_films(body)
        if films > limits.max_images:
            raise RequestProblem(422, "visits", f"visits: {films} films in one request, the limit "
                                                f"is {limits.max_images} (--max-images)")
        try:
            answer = await asyncio.wait_for(run_in_threadpool(_answer, body),
                                            timeout=limits.timeout_s)
        except TimeoutError:
            raise RequestProblem(504, None, f"the forecast took over {limits.timeout_s:g} s "
                                            "(--timeout); try again or send fewer films") from None
        fhir = format == "fhir" or FHIR_MEDIA_TYPE in request.headers.get("accept", "")
        if fhir:
            return JSONResponse(risk_assessment(answer), media_type=FHIR_MEDIA_TYPE)
        return answer

    def _answer(body: ForecastRequest) -> ForecastResponse:
        with tempfile.TemporaryDirectory(prefix="progression-serve-") as upload_dir:
            patients, visits, films = to_tables(body, predictor, image_root, Path(upload_dir))
            try:
                frame = predictor.forecast(patients, visits, films, body.horizons)
            except FilmError as exc:
                raise RequestProblem(422, exc.field, str(exc)) from None
            except ProgressionError as exc:
                raise RequestProblem(422, "body", _without_paths(str(exc), upload_dir)) from None
        return to_response(frame, predictor)


def _without_paths(message: str, upload_dir: str) -> str:
    return message.replace(upload_dir, "<upload>")


class RequestLog:
    """Outermost ASGI layer: a request id (``X-Request-ID``), one log line per request (id, path,
    status, milliseconds), and a JSON 500 for anything that escaped, never a traceback."""

    def __init__(self, asgi, app: FastAPI):
        self.asgi = asgi
        self.app = app  # the FastAPI app, for its OpenAPI schema

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.asgi(scope, receive, send)
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        start, status, started = time.perf_counter(), 500, False

        async def send_with_id(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.asgi(scope, receive, send_with_id)
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client
            logger.debug("request %s: %s", request_id, type(exc).__name__)
            if not started:
                body = json.dumps(error_payload(500, None, "internal error", request_id)).encode()
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"x-request-id", request_id.encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            logger.info("request %s %s %d %.1f ms", request_id, scope.get("path", ""), status,
                        1000 * (time.perf_counter() - start))
