"""Prediction: the predictions table contract, unscored cohorts, missing films, checkpoints."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from test_train_support import shared_run

from progression.cli import main
from progression.columns import PREDICTION_COLUMNS
from progression.errors import CheckpointError
from progression.predict import NOTE_NO_IMAGE, NOTE_UNCALIBRATED, predict_cohort, predict_frame


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def predictions(run):
    return predict_cohort(run.result.checkpoint_path, run.cohort, progress=False)


def test_predictions_have_exactly_the_contract_columns_one_row_per_patient_and_horizon(
        run, predictions):
    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    assert len(predictions) == 12 * 2
    horizons = predictions.groupby("patient_id")["horizon_years"].apply(tuple)
    assert set(horizons) == {(1.0, 2.0)}
    numbers = predictions[list(PREDICTION_COLUMNS[2:-1])].to_numpy(float)
    assert np.isfinite(numbers).all()
    assert (predictions["delta_svdh_lo"] <= predictions["delta_svdh_pred"]).all()
    assert (predictions["delta_svdh_pred"] <= predictions["delta_svdh_hi"]).all()
    assert predictions["p_rapid"].between(0, 1).all()
    np.testing.assert_allclose(predictions["risk_score"],
                               predictions["delta_svdh_pred"] / predictions["horizon_years"])
    wide = predictions.pivot(index="patient_id", columns="horizon_years", values="delta_svdh_pred")
    assert (wide[2.0] >= wide[1.0]).all()  # change grows with the horizon


def test_index_date_is_the_last_visit_with_a_film(run, predictions):
    images = pd.read_csv(run.cohort / "images.csv")
    last = images.groupby("patient_id")["visit_date"].max()
    got = predictions.drop_duplicates("patient_id").set_index("patient_id")["index_date"]
    pd.testing.assert_series_equal(got.sort_index(), last.sort_index(), check_names=False)


def test_index_dates_cut_the_history(run, predictions):
    visits = pd.read_csv(run.cohort / "visits.csv")
    pid = visits["patient_id"].value_counts().index[0]  # a patient with several visits
    first = visits.loc[visits["patient_id"] == pid, "visit_date"].min()
    cut = predict_cohort(run.result.checkpoint_path, run.cohort, horizons=(1.0,),
                         index_dates={pid: first}, progress=False)
    assert cut.set_index("patient_id").loc[pid, "index_date"] == first
    others = cut[cut["patient_id"] != pid].set_index("patient_id")["delta_svdh_pred"]
    full = predictions[predictions["horizon_years"] == 1.0].set_index("patient_id")
    np.testing.assert_allclose(others, full.loc[others.index, "delta_svdh_pred"], rtol=1e-5)


def _notes(out: pd.DataFrame) -> pd.Series:
    """The notes besides the calibration one: the fixture's 12-patient fit has too few
    calibration patients, so every row also says its interval is not calibrated."""
    return out["note"].str.replace(rf"(; )?{re.escape(NOTE_UNCALIBRATED)}", "", regex=True)


def test_cohort_without_any_scores_is_forecast(run, copy_cohort):
    root = copy_cohort(run.cohort)
    visits = pd.read_csv(root / "visits.csv")
    visits.drop(columns=["svdh_total", "svdh_erosion", "svdh_jsn"]).to_csv(root / "visits.csv", index=False)
    (root / "joint_scores.csv").unlink()
    out = predict_cohort(run.result.checkpoint_path, root, progress=False)
    assert list(out.columns) == list(PREDICTION_COLUMNS) and len(out) == 24
    assert np.isfinite(out["delta_svdh_pred"]).all() and (_notes(out) == "").all()


def test_patient_without_films_gets_a_covariate_forecast_with_a_note(run, copy_cohort):
    root = copy_cohort(run.cohort)
    images = pd.read_csv(root / "images.csv")
    images[images["patient_id"] != "P0002"].to_csv(root / "images.csv", index=False)
    out = predict_cohort(run.result.checkpoint_path, root, progress=False).set_index("patient_id")
    assert (_notes(out).loc["P0002"] == NOTE_NO_IMAGE).all()
    assert np.isfinite(out.loc["P0002", "delta_svdh_pred"]).all()
    visits = pd.read_csv(root / "visits.csv")
    assert out.loc["P0002", "index_date"].iloc[0] == visits.loc[
        visits["patient_id"] == "P0002", "visit_date"].max()
    assert (_notes(out).drop(index="P0002") == "").all()


def test_one_table_of_films_and_covariates_gives_the_same_forecast(run, predictions):
    films = pd.read_csv(run.cohort / "images.csv")
    films["path"] = [str(run.cohort / p) for p in films["path"]]
    visits = pd.read_csv(run.cohort / "visits.csv")
    table = visits.merge(films, on=["patient_id", "visit_date"], how="left").merge(
        pd.read_csv(run.cohort / "patients.csv"), on="patient_id")
    out = predict_frame(run.result.checkpoint_path, table)
    np.testing.assert_allclose(out["delta_svdh_pred"], predictions["delta_svdh_pred"], rtol=1e-4)


def test_predict_command_writes_the_table(run, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    code = main(["predict", "--checkpoint", str(run.result.checkpoint_path), "--data",
                 str(run.cohort), "--out", str(out), "--horizons", "1,2,5", "--no-progress"])
    assert code == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == list(PREDICTION_COLUMNS) and len(table) == 36
    assert "12 patients x 3 horizons" in capsys.readouterr().out


def test_missing_or_foreign_checkpoint_is_a_clear_error(run, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        predict_cohort(tmp_path / "nope.ckpt", run.cohort)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not written by `progression train`"):
        predict_cohort(foreign, run.cohort)
    ckpt = torch.load(run.result.checkpoint_path, map_location="cpu", weights_only=True)
    ckpt["progression"]["layout"]["n_visit_num"] += 3  # weights no longer fit the model
    broken = tmp_path / "broken.ckpt"
    torch.save(ckpt, broken)
    with pytest.raises(CheckpointError, match="incompatible"):
        predict_cohort(broken, run.cohort)
