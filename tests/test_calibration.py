"""Conformal (asymmetric CQR) calibration: coverage reaches the nominal level, with the
finite-sample rank on each side, and a skewed change no longer drags the lower bound down."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from progression.calibration import (
    CalibrationError,
    ConformalCalibration,
    Correction,
    conformal_quantile,
    damage_tertile,
    empirical_coverage,
    fit_conformal,
    fit_preferred,
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
    assert all(q.lo < 0 and q.hi < 0 for q in cal.corrections.values())
    out = cal.apply(frame)
    assert ((out["delta_svdh_hi"] - out["delta_svdh_lo"]) < (frame["delta_svdh_hi"] - frame["delta_svdh_lo"])).all()


def test_each_side_is_the_finite_sample_rank_of_its_own_misses():
    # Raw interval [0, 10] for 39 patients: 19 above it by 1..19 units, 19 below it by
    # 0.1..1.9, one inside (y = 5). Each side's rank is ceil((39 + 1) x 0.95) = 38 of 39.
    #   E_hi = y - 10: -11.9..-10.1, -5, 1..19   -> 38th smallest = 18
    #   E_lo = 0 - y: -29..-11, -5, 0.1..1.9     -> 38th smallest = 1.8
    k = np.arange(1, 20, dtype=float)
    observed = np.concatenate([10.0 + k, -k / 10.0, [5.0]])
    frame = pd.DataFrame(
        {"horizon_years": 1.0, "delta_svdh_lo": 0.0, "delta_svdh_hi": 10.0, "delta_svdh_obs": observed}
    )
    cal = fit_conformal(frame, level=0.9)
    assert math.ceil((39 + 1) * 0.95) == 38
    assert cal.corrections[1.0] == pytest.approx(Correction(lo=1.8, hi=18.0))
    # the plain empirical 95% quantile of E_hi would be 17.1, one rank too optimistic
    assert np.quantile(observed - 10.0, 0.95) == pytest.approx(17.1)
    out = cal.apply(frame.iloc[:1])
    assert (out["delta_svdh_lo"].iloc[0], out["delta_svdh_hi"].iloc[0]) == pytest.approx((-1.8, 28.0))
    assert conformal_quantile(k, 0.8) == 16.0  # ceil(20 x 0.8) = 16


@pytest.mark.parametrize(("level", "need", "need_both"), [(0.9, 9, 19), (0.8, 4, 9), (0.95, 19, 39)])
def test_too_few_calibration_patients_is_a_clear_error_naming_how_many_are_needed(level, need,
                                                                                 need_both):
    # symmetric rank ceil((n + 1) level) <= n needs n >= level / (1 - level); each side's rank
    # ceil((n + 1)(1 + level) / 2) needs n >= (1 + level) / (1 - level)
    frame = pd.DataFrame(
        {"horizon_years": 1.0, "delta_svdh_lo": 0.0, "delta_svdh_hi": 0.0,
         "delta_svdh_obs": np.arange(1.0, need_both + 1.0)}
    )
    with pytest.raises(CalibrationError,
                       match=f"only {need - 1} calibration patient.*at least {need} .*{need_both} "
                             ".*validation split"):
        fit_conformal(frame.iloc[: need - 1], level=level)
    # between the two: one symmetric correction, max(lo - y, y - hi) at rank ceil((n + 1) level)
    symmetric = fit_conformal(frame.iloc[:need], level=level).corrections[1.0]
    assert symmetric == (float(need), float(need))
    # (19 + 1) x 0.95 is exactly 19 (and (9 + 1) x 0.9 = 9, not 9.000000000000002 rounded up):
    # with exactly `need_both` patients each side's correction is its largest miss
    assert fit_conformal(frame, level=level).corrections[1.0] == (-1.0, float(need_both))


def test_a_small_calibration_split_gets_one_correction_for_both_sides_not_none():
    frame = pd.DataFrame(
        {"horizon_years": 1.0, "delta_svdh_lo": 0.0, "delta_svdh_hi": 1.0,
         "delta_svdh_obs": np.r_[np.zeros(9), 5.0]}
    )
    correction = fit_conformal(frame, level=0.9).corrections[1.0]  # 10 patients: < 19, >= 9
    # rank ceil(11 x 0.9) = 10 of max(lo - y, y - hi) = (0 x 9, 4): the 5-unit miss above
    # sets both sides
    assert correction.lo == correction.hi == 4.0
    with pytest.raises(CalibrationError, match="needs at least 9 .*19 for separate"):
        fit_conformal(frame.iloc[:8], level=0.9)


@pytest.mark.parametrize(("per_horizon", "pooled", "symmetric"),
                         [(20, False, False), (12, True, False), (6, True, True)])
def test_fit_prefers_separate_corrections_pooled_over_one_symmetric_per_horizon(
        per_horizon, pooled, symmetric):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "horizon_years": np.repeat([1.0, 2.0], per_horizon),
        "delta_svdh_lo": 0.0, "delta_svdh_hi": 2.0,
        "delta_svdh_obs": rng.gamma(1.0, 2.0, 2 * per_horizon),
    })
    cal = fit_preferred(frame, level=0.9)
    assert cal.scale_by_horizon is pooled
    q, _ = cal.correction_for(1.0)
    assert (q.lo == q.hi) is symmetric
    with pytest.raises(CalibrationError, match="needs at least 9"):
        fit_preferred(frame.iloc[[0, 1, per_horizon, per_horizon + 1]], level=0.9)


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


@pytest.mark.parametrize(
    "state",
    [
        {"level": 0.9},
        {"method": "quantile-magic", "level": 0.9, "scale_by_horizon": False, "per_year": 1.0,
         "corrections": {}, "n_calibration": {}},
        # an asymmetric state must hold both sides
        {"method": "cqr-asymmetric", "level": 0.9, "scale_by_horizon": False,
         "per_year": {"lo": 0.5, "hi": 2.0}, "corrections": {"1.0": 1.5}, "n_calibration": {"1.0": 30}},
    ],
    ids=["missing-keys", "unknown-method", "one-sided-asymmetric"],
)
def test_damaged_state_is_a_clear_error(state):
    with pytest.raises(CalibrationError, match="refit"):
        ConformalCalibration.from_dict(state)


def test_old_symmetric_state_loads_and_gives_the_old_intervals():
    # the state checkpoints carried before the asymmetric rule: one Q per horizon, both sides
    old = {"method": "cqr", "level": 0.9, "scale_by_horizon": False, "per_year": 1.25,
           "corrections": {"1.0": 1.5, "2.0": 2.25}, "n_calibration": {"1.0": 30, "2.0": 28}}
    cal = ConformalCalibration.from_dict(old)
    assert cal.corrections == {1.0: (1.5, 1.5), 2.0: (2.25, 2.25)} and cal.per_year == (1.25, 1.25)
    raw = pd.DataFrame({"horizon_years": [1.0, 2.0, 3.0], "delta_svdh_lo": [0.0, -1.0, 1.0],
                        "delta_svdh_hi": [4.0, 6.0, 1.0], "note": ""})
    out = cal.apply(raw)
    np.testing.assert_allclose(out["delta_svdh_lo"], [0.0 - 1.5, -1.0 - 2.25, 1.0 - 3 * 1.25])
    np.testing.assert_allclose(out["delta_svdh_hi"], [4.0 + 1.5, 6.0 + 2.25, 1.0 + 3 * 1.25])
    assert out["note"].tolist() == ["", "", "interval calibrated by extrapolation from other horizons"]
    # the pre-"method" states meant the same; a re-saved old state keeps its intervals
    del old["method"]
    assert ConformalCalibration.from_dict(old) == cal
    resaved = ConformalCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert resaved.to_dict()["method"] == "cqr-asymmetric"
    pd.testing.assert_frame_equal(resaved.apply(raw), out)


def test_right_skewed_change_keeps_the_lower_bound_near_the_raw_one():
    """SvdH-like change: gamma (most 0-3 units, a long tail to 20+) plus reader noise, with a
    symmetric raw interval around the median. The symmetric rule's single Q is set by the big
    upward misses and drags the lower bound units below zero; the asymmetric one barely moves it."""
    rng = np.random.default_rng(11)

    def draw(n):
        return rng.gamma(0.6, 5.0, n) + rng.normal(0.0, 1.0, n)

    calibration_y, test_y = draw(400), draw(3000)
    median = float(np.median(calibration_y))

    def table(y):
        return pd.DataFrame({"horizon_years": 1.0, "delta_svdh_lo": median - 3.0,
                             "delta_svdh_hi": median + 3.0, "delta_svdh_obs": y})

    calibration_split, test_split = table(calibration_y), table(test_y)
    raw_lo = median - 3.0
    raw_coverage = _coverage(test_split, 1.0)
    assert raw_coverage < 0.8  # the raw interval really is too narrow (above all, too low-reaching)

    # the symmetric rule by hand: Q = ceil(401 x 0.9) = 361st smallest of max(lo - y, y - hi)
    symmetric_q = conformal_quantile(np.maximum(raw_lo - calibration_y, calibration_y - median - 3.0), 0.9)
    cal = fit_conformal(calibration_split, level=0.9)
    q = cal.corrections[1.0]
    assert q.hi > 2.0 * abs(q.lo)  # the upper side needs the room, the lower side does not
    assert abs(q.lo) < symmetric_q / 3.0
    assert raw_lo - q.lo > raw_lo - symmetric_q + 2.0  # lower bound at least 2 units higher
    calibrated = cal.apply(test_split)
    assert (calibrated["delta_svdh_lo"] > -1.5).all()  # about the reader noise, not -4 or worse
    assert _coverage(calibrated, 1.0) >= 0.9 - 0.05


def test_uncalibrated_horizon_uses_the_per_year_correction_and_says_so():
    frame = _forecasts(200, seed=5, width_factor=0.5)
    cal = fit_conformal(frame)
    three_years = frame[frame["horizon_years"] == 2.0].assign(horizon_years=3.0)
    out = cal.apply(three_years)
    q_hi = out["delta_svdh_hi"].to_numpy() - three_years["delta_svdh_hi"].to_numpy()
    q_lo = three_years["delta_svdh_lo"].to_numpy() - out["delta_svdh_lo"].to_numpy()
    np.testing.assert_allclose(q_hi, cal.per_year.hi * 3.0)
    np.testing.assert_allclose(q_lo, cal.per_year.lo * 3.0)
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
    patients split 20/40/40 into train / validation (half of it calibration) / test, with its raw and
    calibrated forecasts for every patient and the simulator's true changes."""
    import torch

    from progression.cohort import read_cohort
    from progression.config import load_config
    from progression.data.outcomes import outcomes_from_truth
    from progression.evaluate.inputs import load_cohort
    from progression.models.checkpoint import CheckpointMeta
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
    meta = torch.load(result.checkpoint_path, weights_only=False)["progression"]
    return {
        "cohort": cohort,
        "checkpoint": result.checkpoint_path,
        "meta": meta,
        # patient ids per split, from the checkpoint's salted hashes and the cohort's ids
        "split": CheckpointMeta.from_dict(meta).split_of(cohort.patient_ids),
        "raw": predict_cohort(result.checkpoint_path, cohort, progress=False, calibrate=False),
        "calibrated": predict_cohort(result.checkpoint_path, cohort, progress=False),
        "truth": outcomes_from_truth(load_cohort(cohort)),
    }


@pytest.mark.slow
def test_fit_stores_the_conformal_correction_and_predict_applies_it(covariate_model):
    meta = covariate_model["meta"]
    cal = ConformalCalibration.from_dict(meta["calibration"])
    unscored = ConformalCalibration.from_dict(meta["calibration_unscored"])
    assert cal.level == 0.9 and sum(cal.n_calibration.values()) >= 20
    raw, calibrated = covariate_model["raw"], covariate_model["calibrated"]
    visits = covariate_model["cohort"].visits
    scored = raw["patient_id"].isin(visits.dropna(subset=["svdh_total"])["patient_id"])
    assert scored.any() and not scored.all()  # both regimes of history are forecast
    for h, regime, correction in ((h, s, c) for h in (1.0, 2.0)
                                  for s, c in ((True, cal), (False, unscored))):
        q, _ = correction.correction_for(h)
        rows = (raw["horizon_years"] == h) & (scored == regime)
        np.testing.assert_allclose(calibrated.loc[rows, "delta_svdh_hi"], raw.loc[rows, "delta_svdh_hi"] + q.hi, atol=1e-6)
        np.testing.assert_allclose(calibrated.loc[rows, "delta_svdh_lo"], raw.loc[rows, "delta_svdh_lo"] - q.lo, atol=1e-6)
    pd.testing.assert_series_equal(calibrated["delta_svdh_pred"], raw["delta_svdh_pred"])
    card = covariate_model["checkpoint"].parent.parent / "MODEL_CARD.md"
    assert "| horizon (years) | correction, lower and upper bound (SvdH units) |" in card.read_text()


@pytest.mark.slow
def test_conformal_intervals_cover_90_percent_of_held_out_simulated_patients(covariate_model):
    split = covariate_model["split"]
    truth = covariate_model["truth"][["patient_id", "horizon_years", "delta_svdh_obs"]]
    table = covariate_model["raw"].merge(truth, on=["patient_id", "horizon_years"])
    calibration_split = table[table["patient_id"].isin(split["val"] + split["calibration"])]
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

    pid = covariate_model["split"]["test"][0]
    report = explain_patient(covariate_model["checkpoint"], covariate_model["cohort"], pid, steps=8)
    assert report.interval_calibrated and not report.uses_images
    assert report.covariates and all(np.isfinite(c.effect) for c in report.covariates)
    assert all(v.images == [] and np.isfinite(v.contribution) for v in report.visits)
    row = covariate_model["calibrated"].query("patient_id == @pid and horizon_years == 1.0").iloc[0]
    assert report.forecasts.query("horizon_years == 1.0")["delta_svdh_hi"].iloc[0] == pytest.approx(row.delta_svdh_hi)
    html = render_report(report, tmp_path).read_text()
    assert "it does not look at the radiographs" in html and "conformal calibration" in html
