"""The forecast service, over real HTTP: uvicorn on a loopback port with the shared tiny model.

Every answer is checked for what a caller sees: the same numbers as `predict`, a FHIR
RiskAssessment that parses back, and one JSON error naming the field for each refusal, never a
traceback.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from test_train_support import shared_run

from progression.cli import main
from progression.cohort import read_cohort
from progression.predict import predict_cohort
from progression.serve.adapter import request_from_cohort
from progression.serve.app import Limits, create_app
from progression.serve.predictor import Predictor

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY = 256 * 1024
MAX_IMAGES = 24


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@contextlib.contextmanager
def serving(predictor: Predictor, image_root, token, limits: Limits):
    """The real service (uvicorn on a free loopback port, in a thread) and a client for it."""
    import uvicorn

    app = create_app(predictor, image_root, token, limits)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def predictor(run):
    predictor = Predictor(run.result.checkpoint_path)
    yield predictor
    predictor.close()


@pytest.fixture(scope="module")
def server(run, predictor):
    """With a token, the cohort as image root, a small body and film limit."""
    with serving(predictor, run.cohort.resolve(), TOKEN,
                 Limits(MAX_BODY, MAX_IMAGES, 60.0)) as client:
        yield client


@pytest.fixture(scope="module")
def cohort(run):
    return read_cohort(run.cohort)


@pytest.fixture(scope="module")
def patient(cohort):
    """A patient with several visits whose scored visits all have totals in visits.csv (the
    service reads totals, not joint_scores.csv), so predict and the service see the same data."""
    js = cohort.joint_scores
    unscored = cohort.visits[cohort.visits["svdh_total"].isna()]
    joint_only = set(unscored.merge(js, on=["patient_id", "visit_date"])["patient_id"])
    counts = cohort.visits["patient_id"].value_counts()
    pid = next(p for p in counts.index if p not in joint_only)
    assert counts[pid] >= 2
    return pid


@pytest.fixture(scope="module")
def body(server, cohort, patient):
    config = server.get("/v1/model", headers=AUTH).json()["config"]
    covariates = (config["static_covariates"], config["visit_covariates"])
    return request_from_cohort(cohort, patient, (1.0, 2.0), covariates)


def no_traceback(response: httpx.Response) -> None:
    text = response.text
    assert "Traceback" not in text and 'File "' not in text, text


def error_field(response: httpx.Response, status: int) -> str:
    no_traceback(response)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["message"]
    return error["field"]


def test_forecast_equals_predict_for_the_same_patient(run, server, body, patient):
    got = server.post("/v1/forecast", json=body, headers=AUTH)
    assert got.status_code == 200, got.text
    answer = got.json()
    expected = predict_cohort(run.result.checkpoint_path, run.cohort, horizons=(1.0, 2.0),
                              progress=False)
    expected = expected[expected["patient_id"] == patient].reset_index(drop=True)
    assert answer["patient_id"] == patient
    assert answer["index_date"] == expected["index_date"].iloc[0]
    frame = pd.DataFrame(answer["forecasts"])
    for column in ("horizon_years", "svdh_index_pred", "delta_svdh_pred", "delta_svdh_lo",
                   "delta_svdh_hi", "p_rapid", "risk_score"):
        np.testing.assert_allclose(frame[column], expected[column], rtol=1e-4, atol=1e-5,
                                   err_msg=column)
    assert list(frame["note"]) == list(expected["note"])


def test_uploaded_films_give_the_same_forecast_as_films_by_path(run, server, body):
    upload = {**body, "visits": []}
    for visit in body["visits"]:
        films = [{"region": f["region"],
                  "data_base64": base64.b64encode((run.cohort / f["path"]).read_bytes()).decode(),
                  "format": f["path"].rsplit(".", 1)[1]} for f in visit["images"]]
        upload["visits"].append({**visit, "images": films})
    by_path = server.post("/v1/forecast", json=body, headers=AUTH).json()["forecasts"]
    uploaded = server.post("/v1/forecast", json=upload, headers=AUTH)
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["forecasts"] == by_path  # the same pixels, the same numbers


def test_fhir_answer_is_a_valid_risk_assessment_with_the_forecast(server, body):
    from fhir.resources.R4B.observation import Observation
    from fhir.resources.R4B.riskassessment import RiskAssessment

    plain = server.post("/v1/forecast", json=body, headers=AUTH).json()["forecasts"]
    for kwargs in ({"params": {"format": "fhir"}, "headers": AUTH},
                   {"headers": {**AUTH, "Accept": "application/fhir+json"}}):
        got = server.post("/v1/forecast", json=body, **kwargs)
        assert got.status_code == 200 and got.headers["content-type"].startswith(
            "application/fhir+json")
        resource = RiskAssessment.model_validate(got.json())
        assert [float(p.probabilityDecimal) for p in resource.prediction] == pytest.approx(
            [f["p_rapid"] for f in plain], abs=1e-6)
        assert [float(p.whenRange.high.value) for p in resource.prediction] == [1.0, 2.0]
        assert "rapid radiographic progression" in resource.prediction[0].outcome.text
        observations = {o.id: Observation.model_validate(o.model_dump()) for o in
                        resource.contained}
        for ref, f in zip(resource.basis, plain):
            obs = observations[ref.reference.removeprefix("#")]
            assert float(obs.valueQuantity.value) == pytest.approx(f["delta_svdh_pred"], abs=1e-5)
            lo, hi = (float(c.valueQuantity.value) for c in obs.component[:2])
            assert (lo, hi) == pytest.approx((f["delta_svdh_lo"], f["delta_svdh_hi"]), abs=1e-5)
        assert resource.method.coding[0].version.startswith("sha256:")


def test_requests_without_the_bearer_token_get_401(server, body):
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        got = server.post("/v1/forecast", json=body, headers=headers)
        assert error_field(got, 401) == "Authorization"
        assert got.headers["www-authenticate"] == "Bearer"
    assert server.get("/v1/model").status_code == 401
    assert server.get("/healthz").json() == {"status": "ok"}  # probes need no token
    assert server.get("/readyz").json()["ready"] is True


def test_oversize_body_gets_413_before_it_is_read(server, body):
    big = {**body, "visits": [{**body["visits"][0], "images": [{
        "region": "hand_left", "format": "png",
        "data_base64": base64.b64encode(os.urandom(MAX_BODY)).decode()}]}]}
    assert error_field(server.post("/v1/forecast", json=big, headers=AUTH), 413) == "body"

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"visits": ['
        for _ in range(MAX_BODY // 1000 + 1):
            yield b" " * 1000
    got = server.post("/v1/forecast", content=chunks(), headers=AUTH)
    assert error_field(got, 413) == "body"


def _edit(body: dict, path: str, value) -> dict:
    """A deep copy of ``body`` with the dotted ``path`` set to ``value`` (None key = delete)."""
    import copy

    out = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return out


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "field"), [
    ("visits.0.visit_date", "2019-13-45", "visits.0.visit_date"),
    ("visits.0.svdh_total", -3, "visits.0.svdh_total"),
    ("visits.0.svdh_total", "many", "visits.0.svdh_total"),
    ("visits.0.images.0.region", "knee_left", "visits.0.images.0.region"),
    ("visits.0.images.0.path", _DELETE, "visits.0.images.0"),
    ("visits.0.images.0.format", "bmp", "visits.0.images.0.format"),
    ("visits.0.covariates.crp_typo", 3.0, "visits.0.covariates.crp_typo"),
    ("visits.0.covariates.crp", "high", "visits.0.covariates.crp"),
    ("visits.0.covariates.crp", [1, 2], "visits.0.covariates.crp"),
    ("patient.patient_id", "a b/../c", "patient.patient_id"),
    ("patient.birth_date", "yesterday", "patient.birth_date"),
    ("patient.covariates.height", 170, "patient.covariates.height"),
    ("patient.nickname", "x", "patient.nickname"),
    ("horizons", [1.0, -2.0], "horizons"),
    ("horizons", [], "horizons"),
    ("visits", [], "visits"),
    ("visits.0.images.0.path", "images/not_there.png", "visits.0.images.0.path"),
])
def test_each_malformed_field_gets_422_naming_it(server, body, path, value, field):
    got = server.post("/v1/forecast", json=_edit(body, path, value), headers=AUTH)
    assert error_field(got, 422) == field
    assert "many" not in got.text and "yesterday" not in got.text  # input values not echoed


def test_repeated_visit_dates_regions_and_bad_uploads_get_422(server, body):
    twice = {**body, "visits": [body["visits"][0], body["visits"][0]]}
    assert error_field(server.post("/v1/forecast", json=twice, headers=AUTH), 422) == "visits"
    film = {"region": "hand_left", "data_base64": "not base64!", "format": "png"}
    one = {**body, "visits": [{**body["visits"][0], "images": [film]}]}
    assert error_field(server.post("/v1/forecast", json=one, headers=AUTH),
                       422) == "visits.0.images.0.data_base64"
    garbage = {**film, "data_base64": base64.b64encode(b"not an image").decode()}
    one = {**body, "visits": [{**body["visits"][0], "images": [garbage]}]}
    assert error_field(server.post("/v1/forecast", json=one, headers=AUTH),
                       422) == "visits.0.images.0"
    got = server.post("/v1/forecast", content=b"{not json", headers=AUTH)
    error_field(got, 422)


def test_too_many_films_get_422_naming_the_limit(server, body):
    film = body["visits"][0]["images"][0]
    visits = [{"visit_date": f"20{10 + k}-01-01", "images": [
        {**film, "region": r} for r in ("hand_left", "hand_right", "foot_left", "foot_right")]}
        for k in range(MAX_IMAGES // 4 + 1)]
    got = server.post("/v1/forecast", json={**body, "visits": visits}, headers=AUTH)
    assert error_field(got, 422) == "visits"
    assert "--max-images" in got.json()["error"]["message"]


@pytest.mark.parametrize("path", ["../outside.png", "/etc/passwd", "images/../../outside.png",
                                  "link_out/outside.png"])
def test_film_paths_outside_the_image_root_get_403(run, server, body, path):
    outside = run.cohort.parent / "outside.png"
    outside.write_bytes((run.cohort / body["visits"][0]["images"][0]["path"]).read_bytes())
    link = run.cohort / "link_out"
    if not link.exists():
        link.symlink_to(run.cohort.parent, target_is_directory=True)
    try:
        got = server.post("/v1/forecast", json=_edit(body, "visits.0.images.0.path", path),
                          headers=AUTH)
        assert error_field(got, 403) == "visits.0.images.0.path"
    finally:
        link.unlink()


def test_model_endpoint_names_version_training_data_and_calibration(run, server):
    info = server.get("/v1/model", headers=AUTH).json()
    assert info["model_version"].startswith("sha256:")
    assert info["training_data_fingerprint"] == read_cohort(run.cohort).fingerprint
    assert info["source"] == run.result.checkpoint_path.name  # no absolute path
    assert info["config"]["image_size"] == 32
    assert isinstance(info["calibration"]["calibrated"], bool)
    if info["model_card"]:
        assert "#" in server.get(info["model_card"], headers=AUTH).text
    schema = server.get("/openapi.json").json()
    request = schema["components"]["schemas"]["ForecastRequest"]
    assert request["examples"][0]["visits"]


def test_unknown_route_and_method_answer_json_errors(server):
    assert error_field(server.get("/v1/nothing", headers=AUTH), 404) is None
    assert error_field(server.get("/v1/forecast", headers=AUTH), 405) is None


def test_log_lines_name_the_request_not_the_patient(server, body, caplog):
    marked = _edit(body, "patient.patient_id", "Zq9-patient-marker")
    with caplog.at_level(logging.DEBUG, logger="progression"):
        got = server.post("/v1/forecast", json=marked, headers=AUTH)
        bad = server.post("/v1/forecast", json=_edit(marked, "visits.0.images.0.path",
                                                      "../Zq9-secret.png"), headers=AUTH)
    assert got.status_code == 200 and bad.status_code == 403
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert got.headers["x-request-id"] in text and bad.headers["x-request-id"] in text
    assert "Zq9" not in text and "visits" not in text and body["visits"][0]["images"][0][
        "path"] not in text


def test_without_image_root_films_by_path_are_refused_and_slow_forecasts_time_out(
        run, predictor, body):
    with serving(predictor, None, None, Limits()) as client:
        got = client.post("/v1/forecast", json=body)
        assert error_field(got, 403) == "visits.0.images.0.path"
        assert "--image-root" in got.json()["error"]["message"]
    with serving(predictor, None, None, Limits(timeout_s=1e-4)) as client:
        covariates_only = {**body, "visits": [{**v, "images": []} for v in body["visits"]]}
        assert error_field(client.post("/v1/forecast", json=covariates_only), 504) is None


def test_serve_refuses_a_non_loopback_host_without_a_token_file(run, capsys):
    code = main(["serve", "--checkpoint", str(run.result.checkpoint_path), "--host", "0.0.0.0"])
    assert code == 2
    assert "--token-file" in capsys.readouterr().err
