"""Baselines: one interface, the model's columns, and the forecasts each rule implies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from progression.cohort import Cohort
from progression.data.features import features_at
from progression.errors import ProgressionError
from progression.evaluate import (
    BASELINES,
    PREDICTION_COLUMNS,
    ClinicalMatrix,
    CohortMean,
    CovariatesModel,
    LinearExtrapolation,
    Oracle,
    load_cohort,
    make_baseline,
    read_tables,
)


def _linear_cohort(rates: dict[str, float], years: int = 4, **covariates) -> Cohort:
    """Patients scored every year with exactly linear SvdH (rate in units/yr)."""
    patients, visits = [], []
    for i, (pid, rate) in enumerate(rates.items()):
        patients.append({"patient_id": pid, "rf": "pos" if i % 2 else "neg", "age": 50 + i})
        for k in range(years):
            visits.append({
                "patient_id": pid,
                "visit_date": f"{2015 + k}-03-01",
                "svdh_total": 10.0 + rate * k,
                "sjc28": covariates.get("sjc28", 4 + 3 * i),
                "crp": covariates.get("crp", 2.0 + 10 * i),
            })
    return Cohort.from_frames(pd.DataFrame(patients), pd.DataFrame(visits))


def _noisy_cohort(n: int = 30, seed: int = 0) -> Cohort:
    """Yearly visits, rates driven by CRP and SJC28, reading noise; some scores missing."""
    rng = np.random.default_rng(seed)
    patients, visits = [], []
    for i in range(n):
        pid = f"P{i:03d}"
        crp, sjc = rng.gamma(2.0, 8.0), rng.poisson(8)
        rate = 0.5 + 0.15 * crp + 0.3 * sjc
        patients.append({"patient_id": pid, "rf": rng.choice(["pos", "neg"]),
                         "sex": rng.choice(["F", "M"])})
        for k in range(4):
            score = 5 + rate * k + rng.normal(0, 1)
            visits.append({"patient_id": pid, "visit_date": f"{2016 + k}-01-1{k}",
                           "svdh_total": round(max(score, 0), 1) if rng.random() > 0.15 else None,
                           "crp": round(crp * rng.uniform(0.8, 1.2), 1), "sjc28": sjc})
    return Cohort.from_frames(pd.DataFrame(patients), pd.DataFrame(visits))


@pytest.fixture(scope="module")
def noisy() -> Cohort:
    return _noisy_cohort()


@pytest.mark.parametrize("name", ["cohort_mean", "linear", "clinical_matrix", "covariates"])
def test_each_baseline_returns_the_full_predictions_table(name, noisy):
    table = make_baseline(name).fit(noisy).predict(noisy, horizons=(1.0, 2.0))
    assert list(table.columns) == list(PREDICTION_COLUMNS)
    assert len(table) == 2 * len(noisy.patients)
    assert set(table["horizon_years"]) == {1.0, 2.0}
    numeric = table[["delta_svdh_pred", "delta_svdh_lo", "delta_svdh_hi", "p_rapid", "risk_score"]]
    assert numeric.notna().all().all()
    assert (table["delta_svdh_lo"] <= table["delta_svdh_pred"]).all()
    assert (table["delta_svdh_pred"] <= table["delta_svdh_hi"]).all()
    assert table["p_rapid"].between(0, 1).all()
    one_year = table[table["horizon_years"] == 1.0].set_index("patient_id")
    two_year = table[table["horizon_years"] == 2.0].set_index("patient_id")
    assert np.allclose(two_year["delta_svdh_pred"], 2 * one_year["delta_svdh_pred"])


def test_oracle_returns_the_full_predictions_table_from_truth(sim_tables):
    table = Oracle().fit().predict(sim_tables, horizons=(1.0, 2.0))
    truth = pd.read_csv(sim_tables.truth_dir / "truth.csv", dtype={"patient_id": str})
    assert list(table.columns) == list(PREDICTION_COLUMNS)
    one = table[table["horizon_years"] == 1.0].set_index("patient_id")
    assert np.allclose(one["delta_svdh_pred"], truth.set_index("patient_id")["oracle_delta_1y"])
    assert np.allclose(one["delta_svdh_hi"], truth.set_index("patient_id")["oracle_delta_q95_1y"])


def test_the_oracles_risk_score_is_the_same_wherever_it_is_read(sim_tables):
    from progression.simulate import Oracle as SimulatorOracle

    as_baseline = Oracle().predict(sim_tables, horizons=(1.0, 2.0))
    as_simulator_truth = SimulatorOracle.load(sim_tables.root).predictions()
    pd.testing.assert_frame_equal(as_baseline, as_simulator_truth)
    # the model's rule (docs/architecture.md): the row's expected change per year
    assert np.allclose(as_baseline["risk_score"],
                       as_baseline["delta_svdh_pred"] / as_baseline["horizon_years"])
    two_year = as_baseline[as_baseline["horizon_years"] == 2.0]
    truth = pd.read_csv(sim_tables.truth_dir / "truth.csv", dtype={"patient_id": str})
    assert np.allclose(two_year["risk_score"].to_numpy(),
                       truth.sort_values("patient_id")["oracle_delta_2y"].to_numpy() / 2)


def test_oracle_refuses_a_cohort_without_truth(noisy):
    with pytest.raises(ProgressionError, match="truth"):
        Oracle().predict(noisy)


def test_cohort_mean_forecasts_the_mean_training_rate_times_the_horizon():
    train = _linear_cohort({"a": 2.0, "b": 4.0})
    table = CohortMean().fit(train).predict(train, horizons=(1.0, 2.0))
    # yearly visits are 365 or 366 days apart, years are 365.25 days: equal to 0.1%
    assert np.allclose(table["risk_score"], 3.0, rtol=1e-3)
    assert np.allclose(table.loc[table["horizon_years"] == 2.0, "delta_svdh_pred"], 6.0, rtol=1e-3)


def test_linear_extrapolation_continues_the_patients_own_slope():
    train = _linear_cohort({"a": 2.0, "b": 4.0})
    table = LinearExtrapolation().fit(train).predict(train, horizons=(2.0,))
    by_patient = table.set_index("patient_id")
    assert by_patient.loc["a", "delta_svdh_pred"] == pytest.approx(4.0, rel=1e-3)
    assert by_patient.loc["b", "delta_svdh_pred"] == pytest.approx(8.0, rel=1e-3)
    assert by_patient.loc["b", "svdh_index_pred"] == pytest.approx(10.0 + 4.0 * 3)
    assert (table["note"] == "").all()


def test_linear_extrapolation_falls_back_to_the_cohort_mean_and_says_so():
    train = _linear_cohort({"a": 2.0, "b": 4.0})
    # patient c has a single scored visit: no slope of its own
    single = Cohort.from_frames(
        pd.DataFrame({"patient_id": ["c"]}),
        pd.DataFrame({"patient_id": ["c", "c"], "visit_date": ["2020-01-01", "2021-01-01"],
                      "svdh_total": [12.0, None]}),
    )
    table = LinearExtrapolation().fit(train).predict(single, horizons=(1.0,))
    assert table["delta_svdh_pred"].iloc[0] == pytest.approx(3.0, rel=1e-3)
    assert table["note"].iloc[0] == LinearExtrapolation.FALLBACK_NOTE


def test_index_dates_cut_the_history_the_baseline_sees():
    cohort = _linear_cohort({"a": 2.0})
    # make the last visit jump: a forecast from 2017 must not see it
    visits = cohort.visits.copy()
    visits.loc[visits["visit_date"] == "2018-03-01", "svdh_total"] = 60.0
    cohort = Cohort.from_frames(cohort.patients, visits)
    table = LinearExtrapolation().fit(_linear_cohort({"x": 1.0, "y": 3.0})).predict(
        cohort, horizons=(1.0,), index_dates={"a": "2017-03-01"}
    )
    assert table["index_date"].iloc[0] == "2017-03-01"
    assert table["delta_svdh_pred"].iloc[0] == pytest.approx(2.0, rel=1e-3)
    assert table["svdh_index_pred"].iloc[0] == pytest.approx(14.0)


def test_clinical_matrix_points_follow_the_documented_cutoffs():
    features = pd.DataFrame({
        "sjc28": [9, 10, 18, 3, np.nan],
        "crp": [5.9, 6.0, 30.0, np.nan, 1.0],
        "esr": [np.nan, np.nan, np.nan, 60.0, np.nan],
        "rf": ["neg", "pos", "pos", "0", "1"],
    })
    points, notes = ClinicalMatrix().points(features)
    # sjc <10/10-17/>=18 -> 0/1/2; crp <6/6-29/>=30 mg/L -> 0/1/2 (esr >= 52 -> 2); rf 0/1
    assert points.tolist() == [0, 3, 5, 2, 1]
    assert notes[:4] == ["", "", "", ""]
    assert "sjc28" in notes[4]


def test_clinical_matrix_risk_never_falls_as_points_rise(noisy):
    matrix = ClinicalMatrix().fit(noisy)
    table = matrix.predict(noisy, horizons=(1.0,))
    dates = pd.DataFrame({"patient_id": table["patient_id"],
                          "date": pd.to_datetime(table["index_date"])})
    points, _ = matrix.points(features_at(load_cohort(noisy), dates))
    ordered = table.assign(points=points).sort_values("points")
    assert ordered["points"].nunique() >= 3
    assert ordered["risk_score"].is_monotonic_increasing
    assert ordered["p_rapid"].is_monotonic_increasing


def test_clinical_matrix_names_the_missing_covariates():
    train = Cohort.from_frames(
        pd.DataFrame({"patient_id": ["a"]}),
        pd.DataFrame({"patient_id": ["a"] * 3, "visit_date": ["2015-01-01", "2016-01-01",
                                                            "2017-01-01"],
                      "svdh_total": [1.0, 2.0, 3.0], "crp": [3.0, 4.0, 5.0]}),
    )
    with pytest.raises(ProgressionError, match="sjc28, rf"):
        ClinicalMatrix().fit(train)


def test_covariates_model_is_repeatable_for_a_seed():
    small = _noisy_cohort(n=12, seed=5)
    first_model = CovariatesModel(seed=3).fit(small)
    second_model = CovariatesModel(seed=3).fit(small)
    pd.testing.assert_frame_equal(first_model.predict(small), second_model.predict(small))
    assert first_model.tuning_ == second_model.tuning_


def test_covariates_model_is_tuned_by_patient_grouped_cross_validation(noisy):
    # The budget rule: TUNING_CANDIDATES settings drawn from the grid with the seed, each scored
    # by the cross-validated MAE of the annual rate; the best one is refitted and used.
    from sklearn.model_selection import GroupKFold, cross_val_predict

    from progression.evaluate.baselines import TUNING_CANDIDATES, TUNING_FOLDS, training_pairs

    model = CovariatesModel(seed=1).fit(noisy)
    tried = model.tuning_["candidates"]
    assert len(tried) == TUNING_CANDIDATES and model.tuning_["folds"] == TUNING_FOLDS
    assert len({tuple(c["params"].items()) for c in tried}) == TUNING_CANDIDATES
    assert model.tuning_["cv_mae"] == min(c["cv_mae"] for c in tried)
    booster = model.model_[-1].get_params()
    assert {k: booster[k] for k in model.tuning_["params"]} == model.tuning_["params"]

    # one candidate's score, recomputed by hand from the same folds
    pairs = training_pairs(load_cohort(noisy))
    x, y = model._design(pairs), pairs["rate"].to_numpy(float)
    fitted = cross_val_predict(model._model(tried[0]["params"]), x, y,
                               groups=pairs["patient_id"], cv=GroupKFold(TUNING_FOLDS))
    assert tried[0]["cv_mae"] == pytest.approx(np.mean(np.abs(fitted - y)))
    # another seed draws other settings
    assert CovariatesModel(seed=2).candidates() != model.candidates()


def test_a_baseline_without_training_pairs_asks_for_more_scored_visits():
    train = Cohort.from_frames(
        pd.DataFrame({"patient_id": ["a"]}),
        pd.DataFrame({"patient_id": ["a"], "visit_date": ["2015-01-01"], "svdh_total": [1.0]}),
    )
    with pytest.raises(ProgressionError, match="pair"):
        CohortMean().fit(train)


def test_every_registered_baseline_has_the_same_interface():
    for name, cls in BASELINES.items():
        baseline = make_baseline(name)
        assert isinstance(baseline, cls)
        assert callable(baseline.fit) and callable(baseline.predict)
    with pytest.raises(ProgressionError, match="unknown baseline"):
        make_baseline("nope")


@pytest.fixture(scope="module")
def sim_tables(tmp_path_factory):
    from progression.simulate import SimulationConfig, simulate_cohort

    root = Path(tmp_path_factory.mktemp("sim") / "cohort")
    simulate_cohort(root, SimulationConfig(n_patients=10, seed=4, render_images=False,
                                           oracle_draws=32))
    return read_tables(root)
