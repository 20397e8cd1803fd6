"""Subgroup metrics and leave-one-site-out: values equal direct computation on the subgroup."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index
from sklearn.metrics import roc_auc_score

from progression import metrics as m
from progression.cohort import Cohort
from progression.errors import ProgressionError
from progression.evaluate import CohortMean
from progression.subgroups import (
    ALL_METRICS,
    MIN_EVENTS,
    MIN_PATIENTS,
    leave_one_site_out,
    subgroup_levels,
    subgroup_metrics,
)


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    obs = np.round(rng.gamma(1.2, 3.0, n) - 1.0)
    pred = np.round(0.7 * obs + rng.normal(1.0, 2.5, n), 1)
    return pd.DataFrame({
        "patient_id": [f"P{i:04d}" for i in range(n)],
        "delta_svdh_obs": obs, "delta_svdh_pred": pred,
        "delta_svdh_lo": pred - 4, "delta_svdh_hi": pred + 6,
        "rapid_obs": (obs >= 5).astype(float),
        "p_rapid": np.clip(np.round((pred + 2) / 14, 2), 0.01, 0.99),
        "time_to_event_years": np.round(rng.exponential(2.0, n), 1),
        "event": (rng.random(n) < 0.5).astype(float),
        "risk_score": pred,
        "sex": rng.choice(["F", "M"], n, p=[0.7, 0.3]),
        # a site of 20 patients: too small for any estimate
        "site": np.r_[np.repeat(["site1", "site2"], (n - 20) // 2), np.repeat("site3", 20)],
        "rf": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 2, n)),
        "svdh_index_obs": (index := rng.integers(0, 120, n).astype(float)),
        "svdh_index_pred": index + rng.normal(0, 4, n),
    })


# the metrics the checks read (the logistic calibration fits take a quarter second each)
QUICK = (m.DELTA_METRICS[0], m.DELTA_METRICS[7], m.SURVIVAL_METRICS[0])


def _row(table: pd.DataFrame, variable: str, level: str, metric: str) -> pd.Series:
    hit = table[(table["variable"] == variable) & (table["level"] == level)
                & (table["metric"] == metric)]
    assert len(hit) == 1, (variable, level, metric)
    return hit.iloc[0]


def test_subgroup_values_equal_the_metric_computed_on_the_subgroup_alone():
    frame = _frame()
    table = subgroup_metrics(frame, by=["sex", "site"], metrics=QUICK, n_boot=200, seed=1)
    women = frame[frame["sex"] == "F"]
    mae = _row(table, "sex", "F", "mae_delta")
    assert mae["value"] == pytest.approx(np.mean(np.abs(women["delta_svdh_obs"]
                                                        - women["delta_svdh_pred"])))
    assert mae["n"] == len(women) and mae["ci_lo"] <= mae["value"] <= mae["ci_hi"]
    site1 = frame[frame["site"] == "site1"]
    auroc = _row(table, "site", "site1", "auroc_rapid")
    assert auroc["value"] == pytest.approx(roc_auc_score(site1["rapid_obs"], site1["p_rapid"]))
    assert auroc["n_rapid"] == int(site1["rapid_obs"].sum())
    cindex = _row(table, "sex", "M", "cindex_event")
    men = frame[frame["sex"] == "M"]
    assert cindex["value"] == pytest.approx(concordance_index(
        men["time_to_event_years"], -men["risk_score"], men["event"]))
    assert cindex["n_events"] == int(men["event"].sum())


def test_small_subgroups_are_counted_but_not_estimated():
    table = subgroup_metrics(_frame(), by=["site"], n_boot=50)
    assert set(table["metric"]) == {metric.name for metric in ALL_METRICS}  # every column given
    small = table[table["level"] == "site3"]
    assert (small["n"] == 20).all() and small["value"].isna().all()
    assert (small["note"] == f"fewer than {MIN_PATIENTS} patients").all()
    big = table[table["level"] == "site1"]
    assert big["value"].notna().all() and (big["note"] == "").all()

    # enough patients, too few rapid progressors: the rapid metrics only are withheld
    frame = _frame()
    frame["rapid_obs"] = 0.0
    frame.loc[: MIN_EVENTS - 2, "rapid_obs"] = 1.0
    table = subgroup_metrics(frame, by=["sex"], metrics=QUICK, n_boot=50)
    women = table[table["level"] == "F"].set_index("metric")
    assert np.isnan(women.loc["auroc_rapid", "value"])
    assert "rapid progressors" in women.loc["auroc_rapid", "note"]
    assert np.isfinite(women.loc["mae_delta", "value"])


def test_levels_cover_missing_values_and_numeric_tertiles():
    frame = _frame()
    rf = subgroup_levels(frame["rf"])
    assert set(rf) == {"0", "1", "missing"}
    damage = subgroup_levels(frame["svdh_index_obs"])
    assert damage.nunique() == 3 and all(label.startswith("tertile") for label in damage)
    table = subgroup_metrics(frame, by=["rf", "svdh_index_obs"], metrics=QUICK, n_boot=20)
    first = damage.str.startswith("tertile 1")
    row = _row(table, "svdh_index_obs", damage[first].iloc[0], "mae_delta")
    assert row["n"] == first.sum()


def test_subgroup_intervals_repeat_for_a_seed_and_bad_input_is_named():
    frame = _frame()
    first = subgroup_metrics(frame, by=["sex"], metrics=QUICK, n_boot=100, seed=4)
    again = subgroup_metrics(frame, by=["sex"], metrics=QUICK, n_boot=100, seed=4)
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(ProgressionError, match="smoker"):
        subgroup_metrics(frame, by=["smoker"])
    with pytest.raises(ProgressionError, match="one row per patient"):
        subgroup_metrics(pd.concat([frame, frame.head(1)]), by=["sex"])


def _site_cohort() -> Cohort:
    rng = np.random.default_rng(0)
    patients, visits = [], []
    for i in range(24):
        pid, site = f"P{i:02d}", f"site{i % 3 + 1}"
        rate = 1.0 + 2.0 * (i % 3)  # each site progresses at its own rate
        patients.append({"patient_id": pid, "site": site})
        for k in range(3):
            visits.append({"patient_id": pid, "visit_date": f"{2016 + k}-03-01",
                           "svdh_total": 5 + rate * k + rng.normal(0, 0.1)})
    return Cohort.from_frames(pd.DataFrame(patients), pd.DataFrame(visits))


def test_leave_one_site_out_forecasts_each_site_from_the_other_sites_only():
    cohort = _site_cohort()
    seen = []

    def fit_predict(train, test):
        seen.append((set(train.patients["site"]), set(test.patients["site"])))
        return CohortMean().fit(train).predict(test, horizons=(1.0,))

    table = leave_one_site_out(cohort, fit_predict)
    assert seen == [({"site2", "site3"}, {"site1"}), ({"site1", "site3"}, {"site2"}),
                    ({"site1", "site2"}, {"site3"})]
    assert len(table) == 24 and set(table["held_out_site"]) == {"site1", "site2", "site3"}
    # site1 (rate 1) is forecast at the mean rate of sites 2 and 3 (rates 3 and 5)
    site1 = table[table["held_out_site"] == "site1"]
    assert site1["delta_svdh_pred"].to_numpy() == pytest.approx(np.full(8, 4.0), abs=0.1)

    with pytest.raises(ProgressionError, match="outside the left-out site"):
        leave_one_site_out(cohort, lambda train, test: CohortMean().fit(train).predict(train))
    with pytest.raises(ProgressionError, match="'centre' column"):
        leave_one_site_out(cohort, fit_predict, site_column="centre")
