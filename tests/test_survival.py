"""Time to progression: outcome events, Kaplan-Meier by risk tertile, log-rank, Cox PH."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from progression.evaluate import Oracle, OutcomeRule, outcomes_from_truth, read_tables
from progression.evaluate.baselines import features_at
from progression.evaluate.outcomes import first_event
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
    adjusted = result["risk_plus_clinical"]
    assert "risk_score" in adjusted["terms"] and len(adjusted["terms"]) > 1
    assert adjusted["n"] <= 80
