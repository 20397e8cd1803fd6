"""Selecting predicted fast progressors: ranking, ties, rules, and the predictive summary."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from progression.enrich.plan import TrialDesign, treated_rapid_fraction
from progression.enrich.selection import (
    SelectionRule,
    at_horizon,
    check_predictions,
    read_predictions,
    select,
    summarise,
)
from progression.errors import ProgressionError

Z90 = stats.norm.ppf(0.95)  # half-width of a central 90% interval in SDs


def forecasts(rows: list[tuple], horizon: float = 1.0) -> pd.DataFrame:
    """(patient_id, delta_svdh_pred, sd, p_rapid, risk_score) -> a predictions table."""
    frame = pd.DataFrame(rows, columns=["patient_id", "delta_svdh_pred", "sd", "p_rapid",
                                        "risk_score"])
    frame["delta_svdh_lo"] = frame["delta_svdh_pred"] - Z90 * frame.pop("sd")
    frame["delta_svdh_hi"] = 2 * frame["delta_svdh_pred"] - frame["delta_svdh_lo"]
    frame["index_date"] = "2020-01-01"
    frame["horizon_years"] = horizon
    frame["svdh_index_pred"] = 10.0
    frame["note"] = ""
    return check_predictions(frame, "test table")


TIED = forecasts([
    ("p1", 3.0, 1.0, 0.2, 3.0),
    ("p2", 5.0, 1.0, 0.4, 5.0),
    ("p3", 5.0, 1.0, 0.6, 5.0),  # same risk as p2, higher p_rapid -> ranked before p2
    ("p4", 5.0, 1.0, 0.4, 5.0),  # identical to p2 -> patient_id decides: p2 before p4
    ("p5", 1.0, 1.0, 0.0, 1.0),
    ("p6", 2.0, 1.0, 0.1, 2.0),
    ("p7", 0.5, 1.0, 0.0, 0.5),
    ("p8", 0.0, 1.0, 0.0, 0.0),
    ("p9", 4.0, 1.0, 0.3, 4.0),
    ("p10", 2.5, 1.0, 0.1, 2.5),
])


def test_ties_are_broken_by_p_rapid_then_patient_id_whatever_the_row_order():
    expected = ["p3", "p2", "p4", "p9"]
    for seed in range(5):
        shuffled = TIED.sample(frac=1, random_state=seed)
        chosen = select(shuffled, SelectionRule(enrol=4), "test table")
        assert list(chosen["patient_id"]) == expected
        assert list(chosen["rank"]) == [1, 2, 3, 4]


def test_top_fraction_enrols_the_ceiling_of_the_fraction():
    assert len(select(TIED, SelectionRule(top_fraction=0.3), "t")) == 3
    assert len(select(TIED, SelectionRule(top_fraction=0.25), "t")) == 3  # ceil(2.5)
    assert len(select(TIED, SelectionRule(top_fraction=1.0), "t")) == 10
    assert len(select(TIED, SelectionRule(top_fraction=0.01), "t")) == 1


def test_p_rapid_threshold_keeps_everybody_at_or_above_it():
    chosen = select(TIED, SelectionRule(p_rapid_threshold=0.4), "t")
    assert set(chosen["patient_id"]) == {"p2", "p3", "p4"}


def test_threshold_nobody_reaches_is_a_clear_error():
    with pytest.raises(ProgressionError, match=r"p_rapid >= 0.9.*highest is 0.600"):
        select(TIED, SelectionRule(p_rapid_threshold=0.9), "preds.csv")


def test_enrolling_more_than_the_cohort_is_a_clear_error():
    with pytest.raises(ProgressionError, match=r"--enrol 11 is more than the 10 patients"):
        select(TIED, SelectionRule(enrol=11), "preds.csv")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"top_fraction": 0.3, "enrol": 3}, {"top_fraction": 1.5}, {"enrol": 0},
     {"p_rapid_threshold": -0.1}],
)
def test_invalid_rules_are_rejected(kwargs):
    with pytest.raises(ProgressionError):
        SelectionRule(**kwargs)


def test_summary_combines_within_and_between_patient_variance():
    # means 2 and 4 (between-patient variance 1), each forecast SD 1 (within variance 1)
    frame = forecasts([("a", 2.0, 1.0, 0.1, 2.0), ("b", 4.0, 1.0, 0.3, 4.0)])
    summary = summarise(frame, interval_level=0.9)
    assert summary.mean_delta == pytest.approx(3.0)
    assert summary.sd_within == pytest.approx(1.0)
    assert summary.sd_between == pytest.approx(1.0)
    assert summary.sd_delta == pytest.approx(math.sqrt(2.0))
    assert summary.rapid_fraction == pytest.approx(0.2)


def test_treated_rapid_fraction_matches_the_normal_tail_by_hand():
    # forecast N(6, 2^2): P(change >= 5) = 0.6915; halved progression needs change >= 10:
    # P = 1 - Phi((10 - 6) / 2) = 0.02275
    p_rapid = stats.norm.sf((5 - 6) / 2)
    frame = forecasts([("a", 6.0, 2.0, p_rapid, 6.0)])
    assert treated_rapid_fraction(frame, TrialDesign(effect=0.5, predictive="normal")) == pytest.approx(0.02275,
                                                                                   abs=1e-4)


def write(tmp_path, frame: pd.DataFrame, name: str = "preds.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_missing_column_names_the_column(tmp_path):
    path = write(tmp_path, TIED.drop(columns="p_rapid"))
    with pytest.raises(ProgressionError, match="p_rapid"):
        read_predictions(path)


def test_empty_forecast_names_the_line_and_patient(tmp_path):
    frame = TIED.copy()
    frame["delta_svdh_pred"] = frame["delta_svdh_pred"].astype(object)
    frame.loc[4, "delta_svdh_pred"] = ""
    with pytest.raises(ProgressionError, match=r"delta_svdh_pred.*line 6 \(patient p5\)"):
        read_predictions(write(tmp_path, frame))


def test_probability_out_of_range_is_rejected(tmp_path):
    frame = TIED.copy()
    frame.loc[0, "p_rapid"] = 1.5
    with pytest.raises(ProgressionError, match=r"line 2 \(patient p1\): p_rapid is outside"):
        read_predictions(write(tmp_path, frame))


def test_unknown_horizon_lists_the_horizons_present():
    both = pd.concat([TIED, TIED.assign(horizon_years=2.0)], ignore_index=True)
    assert len(at_horizon(both, 2.0, "t")) == 10
    with pytest.raises(ProgressionError, match=r"horizon 3 years.*horizons 1, 2"):
        at_horizon(both, 3.0, "t")


def test_duplicate_patient_at_one_horizon_is_an_error():
    with pytest.raises(ProgressionError, match="p1 has more than one forecast"):
        at_horizon(pd.concat([TIED, TIED.head(1)]), 1.0, "t")

