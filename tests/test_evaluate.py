"""evaluate(): outcomes, every method side by side, report files, MLflow, and the CLI."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from progression.cli import main
from progression.cohort import Cohort
from progression.errors import ProgressionError
from progression.evaluate import (
    Oracle,
    OutcomeRule,
    evaluate,
    landmark_outcomes,
    load_cohort,
    outcomes_from_truth,
    read_outcomes,
    read_tables,
)
from progression.evaluate.forecasts import cross_fit
from progression.evaluate.inputs import as_index_dates


def _simulate_tables(root: Path, n: int, seed: int):
    """A simulated cohort without radiographs, read as tables (images are not needed here)."""
    from progression.simulate import SimulationConfig, simulate_cohort

    simulate_cohort(root, SimulationConfig(n_patients=n, seed=seed, render_images=False,
                                           oracle_draws=32))
    return read_tables(root)


def _noisy_model(cohort, seed: int = 0, noise: float = 1.5) -> pd.DataFrame:
    """'Any model's' predictions table: the oracle's forecasts blurred with noise."""
    rng = np.random.default_rng(seed)
    table = Oracle().predict(cohort)
    shift = rng.normal(0, noise, len(table))
    for column in ("delta_svdh_pred", "delta_svdh_lo", "delta_svdh_hi"):
        table[column] = table[column] + shift
    table["p_rapid"] = np.clip(table["p_rapid"] + rng.normal(0, 0.05, len(table)), 0, 1)
    table["svdh_index_pred"] = table["svdh_index_pred"] + rng.normal(0, 2, len(table))
    return table


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluate")
    train = _simulate_tables(base / "train", 40, seed=11)
    test = _simulate_tables(base / "test", 40, seed=12)
    model = _noisy_model(test)
    results = evaluate(model, test, baselines=["cohort_mean", "linear", "clinical_matrix",
                                               "covariates", "oracle"],
                       out_dir=base / "report", train_cohort=train, n_boot=200, seed=0,
                       progress=False)
    return {"results": results, "out": base / "report", "test": test, "train": train,
            "model": model, "base": base}


def _value(results, method, metric, horizon=None):
    where = results["metrics"][method]
    where = where["horizons"][horizon] if horizon else where["overall"]
    return where[metric]["value"]


def test_oracle_beats_the_cohort_mean_on_a_simulated_cohort(run):
    results = run["results"]
    for horizon in ("1y", "2y"):
        assert _value(results, "oracle", "mae_delta", horizon) < _value(
            results, "cohort_mean", "mae_delta", horizon)
    assert _value(results, "oracle", "cindex_event") > 0.7


def test_every_method_gets_every_metric_with_a_confidence_interval(run):
    results = run["results"]
    assert results["methods"] == ["model", "cohort_mean", "linear", "clinical_matrix",
                                  "covariates", "oracle"]
    assert results["skipped"] == {}
    for method in results["methods"]:
        for horizon in ("1y", "2y"):
            mae = results["metrics"][method]["horizons"][horizon]["mae_delta"]
            assert mae["ci_lo"] <= mae["value"] <= mae["ci_hi"]
            assert mae["n"] == 40
        assert "cindex_event" in results["metrics"][method]["overall"]
    # the current-score head is measured for the model only (baselines copy the reading)
    assert "icc_index" in results["metrics"]["model"]["overall"]
    assert "icc_index" not in results["metrics"]["cohort_mean"]["overall"]


def test_metrics_csv_is_tidy_and_matches_metrics_json(run):
    table = pd.read_csv(run["out"] / "metrics.csv")
    assert list(table.columns) == ["method", "horizon_years", "metric", "value", "ci_lo",
                                   "ci_hi", "n", "name"]
    assert not table.duplicated(["method", "horizon_years", "metric"]).any()
    stored = json.loads((run["out"] / "metrics.json").read_text())
    row = table[(table["name"] == "test/mae_delta_1y")].iloc[0]
    assert row["method"] == "model"
    assert row["value"] == pytest.approx(stored["metrics"]["model"]["horizons"]["1y"]["mae_delta"]
                                         ["value"])
    assert "test/oracle/auroc_rapid_2y" in set(table["name"])


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])


def test_report_html_references_every_figure_and_each_reference_exists(run):
    out = run["out"]
    parser = _References()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    written = {p.name for p in out.glob("*.png")}
    assert {"calibration_1y.png", "calibration_2y.png", "scatter_1y.png", "scatter_2y.png",
            "km.png"} <= written
    assert set(parser.images) == written
    for reference in parser.images + parser.links:
        assert (out / reference).is_file(), reference
    for name in ("metrics.json", "metrics.csv", "outcomes.csv", "predictions/clinical_matrix.csv",
                 "predictions/model.csv"):
        assert (out / name).is_file()
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_report_shows_the_side_by_side_table_and_survival_results(run):
    html = (run["out"] / "report.html").read_text(encoding="utf-8")
    for method in run["results"]["methods"]:
        assert f"<th>{method}</th>" in html
    assert "Log-rank test" in html and "hazard ratio" in html
    assert "(&gt;= 5 units/yr)" in html  # text is HTML-escaped
    mae = _value(run["results"], "model", "mae_delta", "1y")
    assert f"{mae:.2f}" in html


def test_baseline_predictions_are_written_as_selector_tables(run):
    table = pd.read_csv(run["out"] / "predictions" / "clinical_matrix.csv",
                        dtype={"patient_id": str})
    assert len(table) == 2 * 40
    assert table["index_date"].str.match(r"\d{4}-\d{2}-\d{2}$").all()


def test_without_a_training_cohort_baselines_are_cross_fitted(run):
    cohort = run["test"]
    index = as_index_dates(outcomes_from_truth(cohort), cohort)
    table = cross_fit("cohort_mean", cohort, (1.0,), index, folds=5, seed=0)
    assert sorted(table["patient_id"]) == cohort.patient_ids  # each patient predicted once
    assert table["risk_score"].nunique() == 5  # one training mean per fold
    assert run["results"]["settings"]["baselines_fitted_on"] == f"{run['train'].root} (40 patients)"


def test_predictions_from_another_index_date_are_refused(run, tmp_path):
    model = run["model"].copy()
    model.loc[model["patient_id"] == model["patient_id"].iloc[0], "index_date"] = "1999-01-01"
    with pytest.raises(ProgressionError, match="index_date"):
        evaluate(model, run["test"], baselines=[], out_dir=tmp_path, n_boot=10, progress=False)


def test_a_patient_predicted_twice_for_one_horizon_is_refused(run, tmp_path):
    model = pd.concat([run["model"], run["model"].iloc[:1]], ignore_index=True)
    with pytest.raises(ProgressionError, match="more than once, e.g. patient"):
        evaluate(model, run["test"], baselines=[], out_dir=tmp_path, n_boot=10, progress=False)


def test_evaluation_is_logged_to_mlflow(run, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    cohort = run["test"].subset(run["test"].patient_ids[:20])
    results = evaluate(run["model"], cohort, baselines=["oracle"], out_dir=tmp_path / "rep",
                       n_boot=20, progress=False, tracking_uri=uri, experiment="eval-test")
    client = MlflowClient(uri)
    logged = client.get_run(results["mlflow_run_id"])
    assert logged.data.metrics["test/mae_delta_1y"] == pytest.approx(
        _value(results, "model", "mae_delta", "1y"))
    assert "test/oracle/mae_delta_2y" in logged.data.metrics
    artifacts = [a.path for a in client.list_artifacts(logged.info.run_id, "evaluation")]
    assert "evaluation/report.html" in artifacts


def test_logging_an_evaluation_leaves_mlflow_global_state_and_cwd_alone(run, tmp_path, monkeypatch):
    import mlflow
    import mlflow.tracking.fluent as fluent

    monkeypatch.chdir(tmp_path)
    before = (mlflow.get_tracking_uri(), fluent._active_experiment_id)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlruns.db'}"
    cohort = run["test"].subset(run["test"].patient_ids[:10])
    evaluate(run["model"], cohort, baselines=[], out_dir=tmp_path / "rep", n_boot=5,
             progress=False, tracking_uri=uri, experiment="eval-global")
    assert (mlflow.get_tracking_uri(), fluent._active_experiment_id) == before
    # Artifacts go beside the database, not into ./mlruns of whatever directory we ran in.
    assert not (tmp_path / "mlruns").exists()
    assert any((tmp_path / "store" / "mlartifacts").rglob("report.html"))


def _real_cohort() -> Cohort:
    """Two patients with scores after their radiographs (a 'real' cohort, no truth)."""
    visits = pd.DataFrame({
        "patient_id": ["a"] * 4 + ["b"] * 3,
        "visit_date": ["2015-01-01", "2016-01-01", "2017-01-01", "2018-01-01",
                       "2015-01-01", "2015-10-01", "2017-01-01"],
        "svdh_total": [10.0, 12.0, 20.0, 21.0, 5.0, 9.0, 6.0],
    })
    return Cohort.from_frames(pd.DataFrame({"patient_id": ["a", "b"]}), visits)


def test_landmark_outcomes_pick_the_index_from_which_most_horizons_are_observed():
    outcomes = landmark_outcomes(load_cohort(_real_cohort()), OutcomeRule(tolerance_years=0.3))
    a = outcomes[outcomes["patient_id"] == "a"].set_index("horizon_years")
    # from 2016 both 1 y (2017) and 2 y (2018) are observed; from 2017 only 1 y
    assert (a["index_date"] == pd.Timestamp("2016-01-01")).all()
    assert a.loc[1.0, "delta_svdh_obs"] == pytest.approx(8.0, rel=0.01)
    assert a.loc[2.0, "delta_svdh_obs"] == pytest.approx(9.0, rel=0.01)
    assert a.loc[1.0, "event"] == 1.0  # +8 in one year is rapid
    assert a.loc[1.0, "time_to_event_years"] == pytest.approx(1.0, abs=0.01)
    b = outcomes[outcomes["patient_id"] == "b"].set_index("horizon_years")
    # from 2015-01: 0.75 y later is within 0.3 y of 1 y, rescaled to 1 y: 4 / 0.75
    assert (b["index_date"] == pd.Timestamp("2015-01-01")).all()
    assert b.loc[1.0, "delta_svdh_obs"] == pytest.approx(4 / 0.747, rel=0.01)
    assert b.loc[2.0, "delta_svdh_obs"] == pytest.approx(1.0 * 2 / 2.0, rel=0.01)


def test_outcomes_file_errors_name_the_line_and_column(tmp_path):
    path = tmp_path / "outcomes.csv"
    path.write_text("patient_id,index_date,horizon_years,delta_svdh_obs,time_to_event_years,event\n"
                    "a,2016-01-01,1,3.5,1.0,1\n"
                    "b,2016-01-01,1,2.0,2.0,yes\n")
    with pytest.raises(ProgressionError, match=r"line 3, column event"):
        read_outcomes(path)
    path.write_text("patient_id,horizon_years\na,1\n")
    with pytest.raises(ProgressionError, match="lacks column"):
        read_outcomes(path)


def test_cli_evaluates_a_predictions_table(tiny_cohort, tmp_path, capsys):
    cohort = load_cohort(tiny_cohort)
    predictions = tmp_path / "predictions.csv"
    _noisy_model(cohort).to_csv(predictions, index=False)
    out = tmp_path / "report"
    code = main(["evaluate", "--predictions", str(predictions), "--data", str(tiny_cohort),
                 "--out", str(out), "--bootstrap", "50", "--baselines", "oracle",
                 "--no-progress"])
    assert code == 0
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["metrics"]["model"]["horizons"]["1y"]["mae_delta"]["n"] == 6
    assert (out / "report.html").is_file()
    assert "report.html" in capsys.readouterr().out


def test_cli_names_a_missing_predictions_file(tiny_cohort, tmp_path, capsys):
    code = main(["evaluate", "--predictions", str(tmp_path / "nope.csv"), "--data",
                 str(tiny_cohort), "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    assert "nope.csv" in capsys.readouterr().err
