"""`progression enrich` end to end through progression.cli.main: files, report, MLflow, errors."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from progression import cli

N = 400


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A model forecast, a noisier 'clinical matrix' forecast and realised outcomes.

    The forecasts are calibrated by construction: each patient's change is drawn from
    the normal distribution its forecast states.
    """
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("enrich_inputs")
    ids = [f"P{i:03d}" for i in range(N)]
    rate = rng.lognormal(0.3, 0.8, N)
    sd = 1.0 + 0.3 * rate
    change = rng.normal(rate, sd)

    def table(score: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({
            "patient_id": ids, "index_date": "2020-01-01", "horizon_years": 1.0,
            "svdh_index_pred": 12.0, "delta_svdh_pred": score,
            "delta_svdh_lo": score - 1.645 * sd, "delta_svdh_hi": score + 1.645 * sd,
            "p_rapid": stats.norm.sf((5 - score) / sd), "risk_score": score, "note": "",
        })

    table(rate).to_csv(root / "predictions.csv", index=False)
    # a coarse selector: the rate seen through noise, then rounded into few categories
    table(np.round(rate * np.exp(rng.normal(0, 0.6, N)))).to_csv(root / "matrix.csv", index=False)
    reached = change >= 5
    pd.DataFrame({
        "patient_id": ids, "index_date": "2020-01-01", "horizon_years": 1.0,
        "delta_svdh_obs": change, "time_to_event_years": np.where(reached, 1.0, 3.0),
        "event": reached.astype(int),
    }).to_csv(root / "outcomes.csv", index=False)
    return root


def run_cli(*args: str) -> int:
    return cli.main(["enrich", *map(str, args), "--no-progress"])


@pytest.fixture(scope="module")
def report(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("enrich_out")
    before = (inputs / "predictions.csv").read_bytes()
    code = run_cli("--predictions", inputs / "predictions.csv", "--out", out,
                   "--top-fraction", 0.3, "--matrix-predictions", inputs / "matrix.csv",
                   "--outcomes", inputs / "outcomes.csv", "--n-sim", 300, "--seed", 1)
    assert code == 0
    assert (inputs / "predictions.csv").read_bytes() == before  # user file untouched
    return out


def test_selected_csv_lists_the_top_30_percent_by_risk(report, inputs):
    selected = pd.read_csv(report / "selected.csv", dtype={"patient_id": str})
    preds = pd.read_csv(inputs / "predictions.csv", dtype={"patient_id": str})
    assert len(selected) == math.ceil(0.3 * N)
    assert list(selected["rank"]) == list(range(1, len(selected) + 1))
    top = preds.nlargest(len(selected), "risk_score")["patient_id"]
    assert set(selected["patient_id"]) == set(top)
    for column in ("patient_id", "rank", "risk_score", "p_rapid", "delta_svdh_pred"):
        assert column in selected.columns


def test_enrichment_json_has_the_trialist_numbers(report):
    summary = json.loads((report / "enrichment.json").read_text())
    model, none = summary["selectors"]["model"], summary["selectors"]["none"]
    assert model["n_selected"] == 120 and none["n_selected"] == N
    assert model["screening_ratio"] == pytest.approx(N / 120)
    # enriched patients are predicted to progress faster than the screened cohort
    assert model["enrichment_ratio"]["mean_delta"] > 1.5
    assert model["expected"]["rapid_fraction"] > none["expected"]["rapid_fraction"]
    for endpoint in ("mean_change", "rapid"):
        sizing = model[endpoint]
        enrolled = sizing["enrolled_per_arm"]
        assert enrolled["control"] == math.ceil(sizing["completers_per_arm"]["control"] / 0.9)
        assert sizing["screened"] == math.ceil(enrolled["total"] * N / 120)
        saved = none[endpoint]["enrolled_per_arm"]["total"] - enrolled["total"]
        assert sizing["saved_vs_no_enrichment"]["patients"] == saved > 0
    assert "clinical_matrix" in summary["selectors"]
    trials = summary["validation"]["simulated_trials"]
    assert set(trials) == {"model", "clinical_matrix", "none"}
    assert summary["validation"]["time_to_rapid"]["model"]["logrank_p"] < 0.05


def test_report_html_references_every_figure(report):
    html = (report / "report.html").read_text()
    pngs = {p.name for p in report.glob("*.png")}
    referenced = set(re.findall(r'src="([^"]+)"', html))
    assert pngs == referenced
    assert {"sample_size_vs_fraction.png", "time_to_rapid_km.png",
            "simulated_power.png"} <= pngs
    assert "<script" not in html and "http" not in html.split("</style>")[0]


def test_missing_column_exits_nonzero_naming_the_column(inputs, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    pd.read_csv(inputs / "predictions.csv").drop(columns="risk_score").to_csv(bad, index=False)
    code = run_cli("--predictions", bad, "--out", tmp_path / "out")
    assert code != 0
    err = capsys.readouterr().err
    assert "risk_score" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_enrolling_more_than_the_cohort_exits_with_a_message(inputs, tmp_path, capsys):
    code = run_cli("--predictions", inputs / "predictions.csv", "--out", tmp_path / "out",
                   "--enrol", 5000)
    assert code != 0
    assert f"--enrol 5000 is more than the {N} patients" in capsys.readouterr().err


def test_mlflow_run_gets_params_metrics_and_the_report(inputs, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    code = run_cli("--predictions", inputs / "predictions.csv", "--out", out,
                   "--tracking-uri", uri, "--experiment", "enrich-test",
                   "--sizing", "formula")
    assert code == 0
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("enrich-test")
    (run,) = client.search_runs([experiment.experiment_id])
    summary = json.loads((out / "enrichment.json").read_text())
    enrolled = summary["selectors"]["model"]["mean_change"]["enrolled_per_arm"]["total"]
    assert run.data.metrics["enrich/enrolled_total_mean_model_1y"] == enrolled
    assert run.data.params["enrich.design.effect"] == "0.5"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "enrichment")}
    assert {"enrichment/report.html", "enrichment/sample_size_vs_fraction.png"} <= artifacts
    assert "enrichment/selected.csv" not in artifacts  # patient ids stay in --out
    assert list(workdir.iterdir()) == []  # artifacts beside the database, not in the cwd


def test_nothing_is_logged_without_a_tracking_uri(inputs, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert run_cli("--predictions", inputs / "predictions.csv", "--out", "out",
                   "--sizing", "formula") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_matrix_fitted_from_cohorts_selects_as_many_patients_as_the_model(tmp_path):
    from progression.simulate import Oracle

    for name, seed in (("train", 0), ("screen", 1)):
        assert cli.main(["simulate", "--out", str(tmp_path / name), "--patients", "60",
                         "--seed", str(seed), "--no-images", "--workers", "1", "--no-progress"]) == 0
    Oracle.load(tmp_path / "screen").predictions().to_csv(tmp_path / "oracle.csv", index=False)
    out = tmp_path / "out"
    code = run_cli("--predictions", tmp_path / "oracle.csv", "--out", out, "--enrol", 20,
                   "--matrix-from", tmp_path / "screen", "--matrix-train", tmp_path / "train",
                   "--sizing", "formula")
    assert code == 0
    selectors = json.loads((out / "enrichment.json").read_text())["selectors"]
    assert selectors["model"]["n_selected"] == selectors["clinical_matrix"]["n_selected"] == 20
    assert selectors["clinical_matrix"]["n_screened"] == 60


def test_reference_outcomes_size_the_model_and_unenriched_trials(tmp_path):
    from progression.simulate import Oracle

    for name, seed in (("reference", 3), ("screen", 4)):
        assert cli.main(["simulate", "--out", str(tmp_path / name), "--patients", "80",
                         "--seed", str(seed), "--no-images", "--workers", "1",
                         "--no-progress"]) == 0
        Oracle.load(tmp_path / name).predictions().to_csv(tmp_path / f"{name}.csv", index=False)
    out = tmp_path / "out"
    assert run_cli("--predictions", tmp_path / "screen.csv", "--out", out, "--enrol", 24,
                   "--reference-predictions", tmp_path / "reference.csv",
                   "--reference-outcomes", tmp_path / "reference") == 0
    selectors = json.loads((out / "enrichment.json").read_text())["selectors"]
    for name in ("model", "none"):
        for endpoint in ("mean_change", "rapid"):
            sized = selectors[name][endpoint]
            assert sized["sized_by"].endswith("from reference outcomes"), (name, endpoint)
    # one without the other is refused with a message (exit 2)
    assert run_cli("--predictions", tmp_path / "screen.csv", "--out", tmp_path / "o2",
                   "--reference-predictions", tmp_path / "reference.csv") == 2
