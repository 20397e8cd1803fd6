"""Conformal (CQR) calibration: coverage reaches the nominal level, with the finite-sample rank."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from progression.calibration import (
    CalibrationError,
    ConformalCalibration,
    conformal_quantile,
    damage_tertile,
    empirical_coverage,
    fit_conformal,
)

HORIZONS = (1.0, 2.0)


def _forecasts(n_patients: int, seed: int, width_factor: float, offset: float = 0.0):
    """Predictions with known noise: y = mu + N(0, (1.5 * h)^2) SvdH units.

    The raw interval is ``mu +- width_factor * 1.645 * sd + offset``, so ``width_factor`` < 1 is
    over-confident (too narrow) and > 1 too wide; ``offset`` shifts it (biased quantiles).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for h in HORIZONS:
        mu = rng.gamma(2.0, 1.5, n_patients) * h
        sd = 1.5 * h
        y = mu + rng.normal(0.0, sd, n_patients)
        half = width_factor * 1.645 * sd
        rows.append(
            pd.DataFrame(
                {
                    "patient_id": [f"P{i}" for i in range(n_patients)],
                    "horizon_years": h,
                    "delta_svdh_pred": mu,
                    "delta_svdh_lo": mu - half + offset,
                    "delta_svdh_hi": mu + half + offset,
                    "note": "",
                    "delta_svdh_obs": y,
                    "sex": rng.choice(["F", "M"], n_patients),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _coverage(frame: pd.DataFrame, horizon: float) -> float:
    table = empirical_coverage(frame)
    return float(table.loc[table["horizon_years"] == horizon, "coverage"].iloc[0])


@pytest.mark.parametrize(
    ("width_factor", "offset", "scale_by_horizon"),
    [(0.4, 0.0, False), (2.0, 0.0, False), (0.7, 1.5, False), (0.4, 0.0, True)],
    ids=["too-narrow", "too-wide", "biased", "pooled-per-year"],
)
def test_calibrated_intervals_cover_90_percent_of_new_patients(width_factor, offset, scale_by_horizon):
    calibration_split = _forecasts(400, seed=1, width_factor=width_factor, offset=offset)
    test_split = _forecasts(3000, seed=2, width_factor=width_factor, offset=offset)
    raw = [_coverage(test_split, h) for h in HORIZONS]
    assert all(abs(c - 0.9) > 0.08 for c in raw), raw  # the raw quantiles really are off

    cal = fit_conformal(calibration_split, level=0.9, scale_by_horizon=scale_by_horizon)
    calibrated = cal.apply(test_split)
    for h in HORIZONS:
        assert abs(_coverage(calibrated, h) - 0.9) <= 0.05
    # only the interval changes
    pd.testing.assert_series_equal(calibrated["delta_svdh_pred"], test_split["delta_svdh_pred"])


def test_too_wide_intervals_get_narrower():
    frame = _forecasts(400, seed=3, width_factor=2.0)
    cal = fit_conformal(frame)
    assert all(q < 0 for q in cal.corrections.values())
    out = cal.apply(frame)
    assert ((out["delta_svdh_hi"] - out["delta_svdh_lo"]) < (frame["delta_svdh_hi"] - frame["delta_svdh_lo"])).all()


def test_correction_is_the_finite_sample_rank_not_the_plain_quantile():
    # 19 patients with scores 1..19 (observed change above hi by k units):
    # rank ceil((19 + 1) * 0.9) = 18 -> Q = 18, whereas np.quantile(0.9) would give 17.2.
    k = np.arange(1, 20, dtype=float)
    frame = pd.DataFrame(
        {"horizon_years": 1.0, "delta_svdh_lo": 0.0, "delta_svdh_hi": 0.0, "delta_svdh_obs": k}
    )
    cal = fit_conformal(frame, level=0.9)
    assert cal.corrections[1.0] == 18.0
    assert math.ceil((19 + 1) * 0.9) == 18
    assert conformal_quantile(k, 0.8) == 16.0  # ceil(20 * 0.8) = 16


def test_too_few_calibration_patients_is_a_clear_error_and_nine_are_enough_for_90_percent():
    frame = pd.DataFrame(
        {"horizon_years": 1.0, "delta_svdh_lo": 0.0, "delta_svdh_hi": 0.0, "delta_svdh_obs": np.arange(1.0, 10.0)}
    )
    with pytest.raises(CalibrationError, match="only 8 calibration patient.*at least 9"):
        fit_conformal(frame.iloc[:8], level=0.9)
    # (9 + 1) * 0.9 = 9 (not 9.000000000000002 rounded up): the largest of nine scores
    assert fit_conformal(frame, level=0.9).corrections[1.0] == 9.0


def test_missing_observed_column_names_the_column():
    frame = pd.DataFrame({"horizon_years": [1.0], "delta_svdh_lo": [0.0], "delta_svdh_hi": [1.0]})
    with pytest.raises(CalibrationError, match="delta_svdh_obs"):
        fit_conformal(frame)


def test_state_round_trips_through_json_and_gives_the_same_intervals():
    frame = _forecasts(200, seed=4, width_factor=0.5)
    cal = fit_conformal(frame)
    restored = ConformalCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert restored == cal
    pd.testing.assert_frame_equal(restored.apply(frame), cal.apply(frame))


def test_damaged_state_is_a_clear_error():
    with pytest.raises(CalibrationError, match="refit"):
        ConformalCalibration.from_dict({"level": 0.9})


def test_uncalibrated_horizon_uses_the_per_year_correction_and_says_so():
    frame = _forecasts(200, seed=5, width_factor=0.5)
    cal = fit_conformal(frame)
    three_years = frame[frame["horizon_years"] == 2.0].assign(horizon_years=3.0)
    out = cal.apply(three_years)
    q = out["delta_svdh_hi"].to_numpy() - three_years["delta_svdh_hi"].to_numpy()
    np.testing.assert_allclose(q, cal.per_year * 3.0)
    assert out["note"].str.contains("extrapolation").all()
    assert not cal.apply(frame)["note"].str.contains("extrapolation").any()


def test_coverage_by_subgroup_matches_a_hand_count():
    frame = pd.DataFrame(
        {
            "horizon_years": 1.0,
            "delta_svdh_lo": [0.0, 0.0, 0.0, 0.0, 0.0],
            "delta_svdh_hi": [2.0, 2.0, 4.0, 4.0, 4.0],
            "delta_svdh_obs": [1.0, 3.0, 1.0, 5.0, 2.0],
            "sex": ["F", "F", "M", "M", "M"],
        }
    )
    table = empirical_coverage(frame, by=["sex"]).set_index(["subgroup", "level"])
    assert table.loc[("all", "all"), "coverage"] == pytest.approx(3 / 5)
    assert table.loc[("sex", "F"), "coverage"] == pytest.approx(1 / 2)
    assert table.loc[("sex", "M"), "coverage"] == pytest.approx(2 / 3)
    assert table.loc[("sex", "M"), "mean_width"] == pytest.approx(4.0)
    assert table.loc[("sex", "F"), "n"] == 2


def test_damage_tertiles_are_equal_sized_even_with_many_zero_scores():
    scores = pd.Series([0.0] * 6 + [3.0, 10.0, 40.0])
    tertile = damage_tertile(scores)
    assert tertile.value_counts().to_dict() == {"low": 3, "middle": 3, "high": 3}
    assert tertile.iloc[-1] == "high"


# ---------------------------------------------------------------- with a trained model
@pytest.fixture(scope="module")
def covariate_model(tmp_path_factory):
    """A covariates-only model (tiny config, no images: seconds) on a simulated cohort of 600
    patients split 20/40/40 into train / validation (= calibration) / test, with its raw and
    calibrated forecasts for every patient and the simulator's true changes."""
    import torch

    from progression.cohort import read_cohort
    from progression.config import load_config
    from progression.evaluate.outcomes import outcomes_from_truth
    from progression.evaluate.tables import load_cohort
    from progression.predict import predict_cohort
    from progression.simulate import SimulationConfig, simulate_cohort
    from progression.train import fit

    work = tmp_path_factory.mktemp("calibration")
    root = simulate_cohort(
        work / "cohort", SimulationConfig(n_patients=600, seed=3, render_images=False), progress=False
    )
    # render_images=False lists films it did not write; a covariates-only cohort has none
    images = pd.read_csv(root / "images.csv")
    images.iloc[0:0].to_csv(root / "images.csv", index=False)
    cfg = load_config("tiny", [
        f"data.path={root}", f"train.output_dir={work / 'runs'}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}", "tracking.log_model=false",
        "train.progress=false", "model.use_images=false", "data.val_fraction=0.4",
        "data.test_fraction=0.4", "train.image_epochs=0", "train.max_epochs=3",
    ])
    result = fit(cfg)
    cohort = read_cohort(root)
    return {
        "cohort": cohort,
        "checkpoint": result.checkpoint_path,
        "meta": torch.load(result.checkpoint_path, weights_only=False)["progression"],
        "raw": predict_cohort(result.checkpoint_path, cohort, progress=False, calibrate=False),
        "calibrated": predict_cohort(result.checkpoint_path, cohort, progress=False),
        "truth": outcomes_from_truth(load_cohort(cohort)),
    }


@pytest.mark.slow
def test_fit_stores_the_conformal_correction_and_predict_applies_it(covariate_model):
    cal = ConformalCalibration.from_dict(covariate_model["meta"]["calibration"])
    assert cal.level == 0.9 and sum(cal.n_calibration.values()) >= 20
    raw, calibrated = covariate_model["raw"], covariate_model["calibrated"]
    for h in (1.0, 2.0):
        q, _ = cal.correction_for(h)
        rows = raw["horizon_years"] == h
        np.testing.assert_allclose(calibrated.loc[rows, "delta_svdh_hi"], raw.loc[rows, "delta_svdh_hi"] + q, atol=1e-6)
        np.testing.assert_allclose(calibrated.loc[rows, "delta_svdh_lo"], raw.loc[rows, "delta_svdh_lo"] - q, atol=1e-6)
    pd.testing.assert_series_equal(calibrated["delta_svdh_pred"], raw["delta_svdh_pred"])
    card = covariate_model["checkpoint"].parent.parent / "MODEL_CARD.md"
    assert "| horizon (years) | correction added to each side (SvdH units) |" in card.read_text()


@pytest.mark.slow
def test_conformal_intervals_cover_90_percent_of_held_out_simulated_patients(covariate_model):
    split = covariate_model["meta"]["split"]
    truth = covariate_model["truth"][["patient_id", "horizon_years", "delta_svdh_obs"]]
    table = covariate_model["raw"].merge(truth, on=["patient_id", "horizon_years"])
    calibration_split = table[table["patient_id"].isin(split["val"])]
    test_split = table[table["patient_id"].isin(split["test"])]
    assert calibration_split["patient_id"].nunique() >= 200 and test_split["patient_id"].nunique() >= 200

    cal = fit_conformal(calibration_split, level=0.9)
    before = empirical_coverage(test_split).set_index("horizon_years")["coverage"]
    after = empirical_coverage(cal.apply(test_split)).set_index("horizon_years")["coverage"]
    for h in (1.0, 2.0):
        assert abs(after[h] - 0.9) <= 0.05, (h, before[h], after[h])


@pytest.mark.slow
def test_explaining_a_covariates_only_forecast_gives_covariate_and_visit_effects(covariate_model, tmp_path):
    from progression.explain.patient import explain_patient
    from progression.explain.report import render_report

    pid = covariate_model["meta"]["split"]["test"][0]
    report = explain_patient(covariate_model["checkpoint"], covariate_model["cohort"], pid, steps=8)
    assert report.interval_calibrated and not report.uses_images
    assert report.covariates and all(np.isfinite(c.effect) for c in report.covariates)
    assert all(v.images == [] and np.isfinite(v.contribution) for v in report.visits)
    row = covariate_model["calibrated"].query("patient_id == @pid and horizon_years == 1.0").iloc[0]
    assert report.forecasts.query("horizon_years == 1.0")["delta_svdh_hi"].iloc[0] == pytest.approx(row.delta_svdh_hi)
    html = render_report(report, tmp_path).read_text()
    assert "it does not look at the radiographs" in html and "conformal calibration" in html
