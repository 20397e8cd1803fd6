"""Larsen end to end: a cohort declares ``scoring: larsen``; validation, the simulator,
training, prediction and evaluation work in Larsen units with the Larsen thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_train_support import tiny_overrides

from progression.cohort import read_cohort, validate_cohort
from progression.errors import CheckpointError
from progression.scoring import LARSEN, LARSEN_PER_SVDH, SVDH, is_rapid

LARSEN_VISITS = (
    "patient_id,visit_date,larsen_total,crp,das28,treatment\n"
    "p1,2019-01-15,10,12.5,4.1,mtx\n"
    "p1,2020-01-20,14,8.0,3.2,mtx\n"
    "p2,2019-03-01,3,,5.0,tnfi\n"
    "p2,2020-02-28,,30,5.5,tnfi\n"
    "p3,2019-06-10,40,3.1,2.4,\n"
    "p3,2021-06-12,47,2.0,2.0,mtx\n"
)


@pytest.fixture
def larsen_cohort(copy_cohort, handmade_cohort) -> Path:
    """The handmade cohort with Larsen totals, declared in cohort.yaml (joint scores removed)."""
    root = copy_cohort(handmade_cohort)
    (root / "joint_scores.csv").unlink()
    (root / "visits.csv").write_text(LARSEN_VISITS)
    (root / "cohort.yaml").write_text("scoring: larsen\n")
    return root


def _errors(root: Path) -> list[tuple[str, str | None, str, str]]:
    return [(p.file, p.column, p.message, p.fix)
            for p in validate_cohort(root, progress=False, workers=1).errors]


def test_a_larsen_cohort_is_read_with_its_totals_as_the_forecast_score(larsen_cohort):
    cohort = read_cohort(larsen_cohort)
    assert cohort.scoring == "larsen" and cohort.system.max_total == 160
    assert cohort.visits["svdh_total"].tolist()[:2] == [10.0, 14.0]
    assert "larsen_total" not in cohort.schema.visit_numeric  # a score, not a covariate
    assert cohort.subset(["p1"]).scoring == "larsen"


def test_a_larsen_total_above_160_is_an_error_in_larsen_units(larsen_cohort):
    text = LARSEN_VISITS.replace("p3,2021-06-12,47", "p3,2021-06-12,170")
    (larsen_cohort / "visits.csv").write_text(text)
    [(file, column, message, fix)] = _errors(larsen_cohort)
    assert (file, column) == ("visits.csv", "larsen_total")
    assert message == "170 is outside the Larsen (1995 revision, 32 units) range 0-160"
    assert "0-160 Larsen units" in fix


def test_svdh_scores_in_a_larsen_cohort_and_larsen_scores_in_an_svdh_cohort_are_refused(
        larsen_cohort, copy_cohort, handmade_cohort):
    (larsen_cohort / "visits.csv").write_text(LARSEN_VISITS.replace("larsen_total", "svdh_total"))
    [(_, column, message, fix)] = _errors(larsen_cohort)
    assert column == "svdh_total" and "declares scoring: larsen" in message
    assert "larsen_total" in fix
    svdh = copy_cohort(handmade_cohort, "svdh")
    (svdh / "joint_scores.csv").unlink()
    (svdh / "visits.csv").write_text(LARSEN_VISITS)
    [(_, column, message, fix)] = _errors(svdh)
    assert column == "larsen_total" and "declare 'scoring: larsen' in cohort.yaml" in fix


def test_larsen_joint_grades_are_checked_0_to_5_with_larsen_unit_names(larsen_cohort):
    (larsen_cohort / "joint_scores.csv").write_text(
        "patient_id,visit_date,joint,grade\n"
        "p1,2019-01-15,hand_left_wrist_q1,2\n"
        "p1,2019-01-15,hand_left_mcp2,6\n"
        "p1,2019-01-15,hand_left_ip,1\n"
    )
    problems = {(line[1], line[2]) for line in _errors(larsen_cohort)}
    assert problems == {("grade", "6 is not a Larsen grade for hand_left_mcp2"),
                        ("joint", "unknown Larsen unit 'hand_left_ip'")}


def test_an_unknown_scoring_system_in_cohort_yaml_names_the_known_ones(larsen_cohort):
    (larsen_cohort / "cohort.yaml").write_text("scoring: sharp\n")
    errors = [e for e in _errors(larsen_cohort) if e[0] == "cohort.yaml"]
    assert errors[0][2] == "unknown scoring system 'sharp'" and "svdh, larsen" in errors[0][3]


def test_the_larsen_rapid_threshold_is_the_svdh_one_carried_over_by_the_scale_maxima():
    assert LARSEN.rapid_rate == pytest.approx(5 * 160 / 448)
    assert SVDH.rapid_rate == 5.0
    # a change that is rapid in SvdH units is rapid in Larsen units under the conversion
    deltas = np.array([4.0, 5.0, 9.0, 10.0, 11.0])
    assert (is_rapid(deltas * LARSEN_PER_SVDH, 2.0, LARSEN.rapid_rate)
            == is_rapid(deltas, 2.0)).all()


def test_a_simulated_larsen_cohort_is_the_svdh_cohort_scaled_with_the_same_rapid_patients(
        tmp_path):
    from progression.simulate import SimulationConfig, simulate_cohort

    made = {s: simulate_cohort(tmp_path / s, SimulationConfig(
        n_patients=20, seed=3, render_images=False, oracle_draws=16, scoring=s), progress=False)
        for s in ("svdh", "larsen")}
    svdh, larsen = (pd.read_csv(made[s] / "truth" / "truth.csv") for s in ("svdh", "larsen"))
    np.testing.assert_allclose(larsen["delta_true_1y"], svdh["delta_true_1y"] * 160 / 448)
    np.testing.assert_allclose(larsen["oracle_delta_q95_2y"], svdh["oracle_delta_q95_2y"] * 160 / 448)
    assert (larsen["oracle_p_rapid_1y"] == svdh["oracle_p_rapid_1y"]).all()
    for h in (1, 2):
        assert (is_rapid(larsen[f"delta_true_{h}y"], h, LARSEN.rapid_rate)
                == larsen[f"rapid_true_{h}y"].astype(bool)).all()
    visits = pd.read_csv(made["larsen"] / "visits.csv")
    assert "larsen_total" in visits and "svdh_total" not in visits
    assert visits["larsen_total"].max() <= 160
    assert (made["larsen"] / "cohort.yaml").read_text().startswith("scoring: larsen")
    assert not (made["larsen"] / "joint_scores.csv").exists()  # SvdH grades have no place here


@pytest.fixture(scope="module")
def larsen_fit(tmp_path_factory):
    """A tiny model fitted on a simulated Larsen cohort, and a second Larsen cohort to score."""
    from progression.config import load_config
    from progression.simulate import SimulationConfig, simulate_cohort
    from progression.train import fit

    root = tmp_path_factory.mktemp("larsen")
    cohorts = [Path(simulate_cohort(root / name, SimulationConfig(
        n_patients=12, seed=seed, image_size=32, oracle_draws=16, scoring="larsen"),
        progress=False)) for name, seed in (("train", 0), ("test", 5))]
    overrides = tiny_overrides(cohorts[0], root, f"sqlite:///{root / 'mlruns.db'}",
                               **{"train.max_epochs": 3, "train.image_epochs": 1,
                                  "tracking.log_model": False})
    result = fit(load_config("tiny", overrides))
    return result, cohorts[1], root


def test_a_model_trained_on_a_larsen_cohort_records_larsen_and_its_threshold(larsen_fit):
    from progression.trained import load_trained

    result, _, _ = larsen_fit
    trained = load_trained(result.checkpoint_path)
    assert trained.meta.scoring == "larsen"
    assert trained.model.sequence.rapid_rate == pytest.approx(LARSEN.rapid_rate)


def test_larsen_forecasts_are_refused_for_a_cohort_scored_in_svdh(larsen_fit, tiny_cohort):
    from progression.predict import predict_cohort

    result, test_cohort, _ = larsen_fit
    predictions = predict_cohort(result.checkpoint_path, test_cohort, progress=False)
    assert predictions.attrs["scoring"] == "larsen"
    assert predictions["svdh_index_pred"].between(0, 160).all()
    with pytest.raises(CheckpointError, match="trained on Larsen .* scores"):
        predict_cohort(result.checkpoint_path, tiny_cohort, progress=False)


def test_predict_and_evaluate_commands_report_larsen_units(larsen_fit, tmp_path, capsys):
    from progression.cli import main

    result, test_cohort, _ = larsen_fit
    out = tmp_path / "predictions.csv"
    assert main(["predict", "--checkpoint", str(result.checkpoint_path), "--data",
                 str(test_cohort), "--out", str(out), "--no-progress"]) == 0
    assert "in Larsen units" in capsys.readouterr().out
    report = tmp_path / "report"
    assert main(["evaluate", "--checkpoint", str(result.checkpoint_path), "--data",
                 str(test_cohort), "--out", str(report), "--baselines", "cohort_mean,oracle",
                 "--bootstrap", "20", "--no-progress"]) == 0
    assert "changes in Larsen units; rapid: >= 1.79 Larsen units/yr" in capsys.readouterr().out
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["cohort"]["unit"] == "Larsen units"
    assert set(metrics["methods"]) == {"model", "cohort_mean", "oracle"}
    oracle_mae = metrics["metrics"]["oracle"]["horizons"]["1y"]["mae_delta"]["value"]
    assert oracle_mae < 1.0  # the oracle in Larsen units: the truth's own scale (0-160)
    assert "Rapid progression: change &ge; 1.79 Larsen units" in (
        report / "report.html").read_text()
