"""Time to progression: outcome events, Kaplan-Meier by risk tertile, log-rank, Cox PH."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from progression.data.features import features_at
from progression.data.outcomes import first_event
from progression.evaluate import Oracle, OutcomeRule, outcomes_from_truth, read_tables
from progression.evaluate.survival import (
    cox_models,
    km_by_tertile,
    risk_tertiles,
    survival_frame,
)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A simulated cohort of 80 patients (tables and truth, no radiographs)."""
    from progression.simulate import SimulationConfig, simulate_cohort

    root = Path(tmp_path_factory.mktemp("survival") / "cohort")
    simulate_cohort(root, SimulationConfig(n_patients=80, seed=2, render_images=False,
                                           oracle_draws=32))
    return read_tables(root)


def test_first_event_is_the_first_visit_meeting_the_rule():
    years = np.array([0.5, 1.0, 1.5, 2.0])
    change = np.array([1.0, 6.0, 7.0, 12.0])
    # rapid: 1 < 2.5 at 0.5 y, then 6 >= 5 at 1 y
    assert first_event(years, change, OutcomeRule()) == (1.0, 1.0)
    # SDC of 6.5 units: first exceeded by 7 at 1.5 y
    assert first_event(years, change, OutcomeRule(event="sdc", sdc_units=6.5)) == (1.5, 1.0)


def test_first_event_censors_at_the_last_follow_up_visit():
    assert first_event(np.array([0.5, 1.0, 3.0]), np.array([0.0, 1.0, 2.0]), OutcomeRule()) == (
        3.0, 0.0)
    time, event = first_event(np.array([0.0]), np.array([5.0]), OutcomeRule())
    assert np.isnan(time) and np.isnan(event)


def test_simulated_outcomes_use_the_true_change_and_follow_up_events(simulated):
    outcomes = outcomes_from_truth(simulated, OutcomeRule())
    truth = pd.read_csv(simulated.truth_dir / "truth.csv", dtype={"patient_id": str})
    one = outcomes[outcomes["horizon_years"] == 1.0].set_index("patient_id")
    assert np.allclose(one["delta_svdh_obs"], truth.set_index("patient_id")["delta_true_1y"])
    assert one["event"].isin([0.0, 1.0]).all()
    assert one["time_to_event_years"].between(0.5, 3.0).all()
    # an event at t means the true change reached 5 units/yr at t
    followup = pd.read_csv(simulated.truth_dir / "followup.csv", dtype={"patient_id": str})
    pid = one[one["event"] == 1].index[0]
    row = followup[(followup["patient_id"] == pid)
                   & np.isclose(followup["years_from_index"], one.loc[pid, "time_to_event_years"])]
    start = truth.set_index("patient_id").loc[pid, "svdh_true_index"]
    assert row["svdh_total_true"].iloc[0] - start >= 5.0 * one.loc[pid, "time_to_event_years"]


def test_risk_tertiles_are_equal_thirds_even_with_ties():
    groups = risk_tertiles(np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0]))
    assert [int((groups == g).sum()) for g in ("low", "middle", "high")] == [3, 3, 3]


def test_kaplan_meier_and_log_rank_run_on_a_simulated_cohort(simulated):
    outcomes = outcomes_from_truth(simulated, OutcomeRule())
    predictions = Oracle().predict(simulated)
    frame = survival_frame(predictions, outcomes)
    result = km_by_tertile(frame)
    assert result is not None
    assert sum(g["n"] for g in result.counts.values()) == len(frame) == 80
    assert 0.0 <= result.logrank_p <= 1.0 and result.logrank_df == 2
    # the oracle's highest-risk third progresses more often than its lowest third
    assert result.counts["high"]["events"] > result.counts["low"]["events"]
    high = result.fitters["high"].survival_function_.iloc[-1, 0]
    low = result.fitters["low"].survival_function_.iloc[-1, 0]
    assert high < low


def test_cox_models_report_hazard_ratios_with_intervals(simulated):
    outcomes = outcomes_from_truth(simulated, OutcomeRule())
    predictions = Oracle().predict(simulated)
    frame = survival_frame(predictions, outcomes)
    index = outcomes.drop_duplicates("patient_id")
    clinical = features_at(simulated, pd.DataFrame({"patient_id": index["patient_id"],
                                                    "date": index["index_date"]}))
    result = cox_models(frame, clinical.drop(columns="date"))
    risk = result["risk_only"]["terms"]["risk_score"]
    assert risk["hr_lo"] < risk["hr"] < risk["hr_hi"]
    assert risk["hr"] > 1.0  # higher predicted rate, earlier progression
    assert 0.0 <= risk["p"] <= 1.0
    assert frame["event"].sum() < 20  # too few events to adjust: refused, with the reason
    assert "events" in result["risk_plus_clinical"]["error"]


def test_cox_adjusts_for_as_many_clinical_covariates_as_events_allow():
    rng = np.random.default_rng(0)
    n = 300
    clinical = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)],
                             "svdh_last": rng.gamma(2, 10, n), "crp": rng.gamma(2, 5, n),
                             "rf": rng.integers(0, 2, n), "age": rng.normal(55, 10, n),
                             "haq": rng.uniform(0, 3, n)})
    risk = rng.normal(0, 1, n)
    hazard = np.exp(0.8 * risk + 0.02 * clinical["svdh_last"])
    time = rng.exponential(1 / (0.02 * hazard))  # about 40 events in 3 years
    frame = pd.DataFrame({"patient_id": clinical["patient_id"], "risk_score": risk,
                          "time_to_event_years": np.minimum(time, 3.0),
                          "event": (time < 3.0).astype(float)})
    events = int(frame["event"].sum())
    result = cox_models(frame, clinical)
    terms = list(result["risk_plus_clinical"]["terms"])
    # one term per 10 events, the risk score first, then covariates in priority order
    assert 2 <= events // 10 < 6  # the limit binds: not every covariate gets in
    assert len(terms) == events // 10
    assert terms == ["risk_score", "svdh_last", "crp", "rf", "haq", "age"][: events // 10]
    assert result["risk_plus_clinical"]["terms"]["risk_score"]["hr"] > 1.0


@pytest.mark.parametrize(("events", "why"), [(0, "too few"), (10, "same value")])
def test_cox_without_events_or_with_a_constant_risk_says_why_instead_of_failing(events, why):
    n = 20
    frame = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "risk_score": 1.0,
                          "time_to_event_years": np.linspace(0.5, 3.0, n),
                          "event": np.r_[np.ones(events), np.zeros(n - events)]})
    result = cox_models(frame, None)["risk_only"]
    assert why in result["error"] and result["n"] == n
