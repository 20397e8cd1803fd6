"""Evaluation metrics: hand-computed values, library agreement, and the patient bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines.utils import concordance_index
from scipy import special

from progression import metrics as m


def test_mae_rmse_bias_match_hand_computed_values():
    obs, pred = np.array([0.0, 2.0, 4.0]), np.array([1.0, 2.0, 7.0])
    assert m.mae(obs, pred) == pytest.approx(4 / 3)
    assert m.rmse(obs, pred) == pytest.approx(np.sqrt(10 / 3))
    assert m.bias(obs, pred) == pytest.approx(4 / 3)


def test_spearman_matches_the_rank_difference_formula():
    # ranks (1,2,3,4) vs (1,3,2,4): rho = 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 12/60
    assert m.spearman(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(0.8)


def test_interval_coverage_counts_bounds_as_inside_and_width_is_the_mean():
    obs = np.array([1.0, 5.0, 10.0])
    lo, hi = np.zeros(3), np.array([2.0, 4.0, 10.0])
    assert m.coverage(obs, lo, hi) == pytest.approx(2 / 3)
    assert m.width(lo, hi) == pytest.approx(16 / 3)


def test_auroc_auprc_brier_match_hand_computed_values():
    y = np.array([0.0, 0.0, 1.0, 1.0])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    # positive pairs ranked right: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: (0.35<0.4)
    assert m.auroc(y, p) == pytest.approx(3 / 4)
    # thresholds 0.8 (precision 1, recall 1/2) and 0.35 (precision 2/3, recall 1)
    assert m.auprc(y, p) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert m.brier(y, p) == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)


def test_a_constant_predictor_has_auroc_one_half():
    y = np.array([0, 1, 0, 1, 1, 0], dtype=float)
    assert m.auroc(y, np.full(6, 0.3)) == pytest.approx(0.5)
    w = m.bootstrap_counts(6, 20, seed=1)
    finite = m.auroc_batch(y, np.full(6, 0.3), w)
    assert np.allclose(finite[np.isfinite(finite)], 0.5)


def test_calibration_slope_of_two_groups_is_the_ratio_of_logit_differences():
    # Two groups of 10: predicted 0.2 and 0.6, observed 3/10 and 7/10. A two-parameter
    # logistic model fits two groups exactly, so the slope is a ratio of logit differences.
    p = np.repeat([0.2, 0.6], 10)
    y = np.concatenate([np.r_[np.ones(3), np.zeros(7)], np.r_[np.ones(7), np.zeros(3)]])
    expected = (special.logit(0.7) - special.logit(0.3)) / (special.logit(0.6) - special.logit(0.2))
    assert m.calibration_slope(y, p) == pytest.approx(expected, rel=1e-6)
    assert m.calibration_slope_batch(y, p, np.ones((1, 20)))[0] == pytest.approx(expected, rel=1e-6)


def test_perfectly_calibrated_risks_have_slope_one_and_intercept_zero():
    p = np.repeat([0.2, 0.5], 10)
    y = np.concatenate([np.r_[np.ones(2), np.zeros(8)], np.r_[np.ones(5), np.zeros(5)]])
    assert m.calibration_slope(y, p) == pytest.approx(1.0, abs=1e-6)
    assert m.calibration_intercept(y, p) == pytest.approx(0.0, abs=1e-9)
    # risks twice too high on the odds scale -> intercept log(1/2)
    too_high = special.expit(special.logit(p) + np.log(2.0))
    assert m.calibration_intercept(y, too_high) == pytest.approx(-np.log(2.0), abs=1e-6)


def test_icc_2_1_reproduces_the_shrout_fleiss_example():
    # Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges, ICC(2,1) = 0.29
    ratings = np.array(
        [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
        dtype=float,
    )
    assert m.icc_2_1(ratings) == pytest.approx(0.29, abs=0.005)


def test_icc_counts_a_constant_offset_as_disagreement():
    given_scores = np.array([2.0, 10.0, 25.0, 40.0, 60.0])
    assert m.icc(given_scores, given_scores) == pytest.approx(1.0)
    offset = m.icc(given_scores, given_scores + 10.0)
    assert 0.8 < offset < 1.0  # perfectly correlated, but 10 units off: absolute agreement < 1


def test_c_index_is_one_for_a_perfect_risk_ordering_and_zero_without_negation():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.ones(4)
    risk = np.array([4.0, 3.0, 2.0, 1.0])  # the highest risk progresses first
    assert m.c_index(time, event, risk) == pytest.approx(1.0)
    assert concordance_index(time, risk, event) == pytest.approx(0.0)  # lifelines, not negated
    assert m.c_index_batch(time, event, risk, np.ones((1, 4)))[0] == pytest.approx(1.0)


def _tied_sample(seed: int = 0, n: int = 80):
    rng = np.random.default_rng(seed)
    obs = np.round(rng.normal(3, 4, n))
    pred = np.round(obs + rng.normal(0, 3, n))
    y = (obs >= 5).astype(float)
    p = np.round(special.expit((pred - 5) / 2), 1)  # rounding creates ties
    time = np.round(rng.exponential(2, n), 1)
    event = (rng.random(n) < 0.6).astype(float)
    return obs, pred, y, p, time, event


def test_batched_metrics_with_unit_weights_equal_the_library_values_with_ties():
    obs, pred, y, p, time, event = _tied_sample()
    ones = np.ones((1, obs.size))
    pairs = [
        (m.mae, m.mae_batch, (obs, pred)),
        (m.rmse, m.rmse_batch, (obs, pred)),
        (m.spearman, m.spearman_batch, (obs, pred)),
        (m.calibration_slope_linear, m.calibration_slope_linear_batch, (obs, pred)),
        (m.auroc, m.auroc_batch, (y, p)),
        (m.auprc, m.auprc_batch, (y, p)),
        (m.brier, m.brier_batch, (y, p)),
        (m.calibration_slope, m.calibration_slope_batch, (y, p)),
        (m.calibration_intercept, m.calibration_intercept_batch, (y, p)),
        (m.icc, m.icc_batch, (obs, pred)),
        (m.c_index, m.c_index_batch, (time, event, pred)),
    ]
    for point, batch, args in pairs:
        assert batch(*args, ones)[0] == pytest.approx(point(*args), rel=1e-6), point.__name__


def test_a_bootstrap_row_equals_the_metric_on_the_resampled_patients():
    obs, pred, y, p, time, event = _tied_sample(seed=3)
    counts = m.bootstrap_counts(obs.size, 2, seed=5)
    rows = np.repeat(np.arange(obs.size), counts[0].astype(int))  # patients as drawn
    assert m.auroc_batch(y, p, counts)[0] == pytest.approx(m.auroc(y[rows], p[rows]))
    assert m.auprc_batch(y, p, counts)[0] == pytest.approx(m.auprc(y[rows], p[rows]))
    assert m.spearman_batch(obs, pred, counts)[0] == pytest.approx(m.spearman(obs[rows], pred[rows]))
    assert m.c_index_batch(time, event, pred, counts)[0] == pytest.approx(
        m.c_index(time[rows], event[rows], pred[rows])
    )
    assert m.icc_batch(obs, pred, counts)[0] == pytest.approx(m.icc(obs[rows], pred[rows]))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(1, 6), st.booleans()), min_size=3,
             max_size=25)
)
def test_batched_c_index_equals_lifelines_for_any_ties(rows):
    risk, time, event = (np.array(c, dtype=float) for c in zip(*rows))
    expected = m.c_index(time, event, risk)
    got = m.c_index_batch(time, event, risk, np.ones((1, len(rows))))[0]
    assert (np.isnan(expected) and np.isnan(got)) or got == pytest.approx(expected)


def test_bootstrap_ci_contains_the_estimate_and_repeats_for_a_seed():
    obs, pred, y, p, time, event = _tied_sample(seed=7)
    frame = pd.DataFrame({"delta_svdh_obs": obs, "delta_svdh_pred": pred, "rapid_obs": y,
                          "p_rapid": p})
    index = np.arange(len(frame))
    first = m.compute(m.DELTA_METRICS, frame, m.bootstrap_counts(len(frame), 300, seed=11), index)
    again = m.compute(m.DELTA_METRICS, frame, m.bootstrap_counts(len(frame), 300, seed=11), index)
    other = m.compute(m.DELTA_METRICS, frame, m.bootstrap_counts(len(frame), 300, seed=12), index)
    for name in ("mae_delta", "rmse_delta", "spearman_delta", "auroc_rapid", "brier_rapid",
                 "calslope_rapid"):
        estimate = first[name]
        assert estimate.lo <= estimate.value <= estimate.hi, name
        assert (estimate.lo, estimate.hi) == (again[name].lo, again[name].hi)
    assert first["mae_delta"].lo != other["mae_delta"].lo
    assert "coverage_delta" not in first  # the frame has no interval columns


def test_metrics_leave_out_rows_without_an_observed_outcome():
    frame = pd.DataFrame({"delta_svdh_obs": [1.0, np.nan, 3.0, 5.0],
                          "delta_svdh_pred": [2.0, 100.0, 3.0, 5.0]})
    result = m.compute(m.DELTA_METRICS[:1], frame, m.bootstrap_counts(4, 10, 0), np.arange(4))
    assert result["mae_delta"].value == pytest.approx(1 / 3)
    assert result["mae_delta"].n == 3


def test_calibration_table_bins_predictions_into_deciles():
    predicted = np.linspace(0.005, 0.995, 100)
    observed = (np.arange(100) % 2).astype(float)
    table = m.calibration_table(observed, predicted)
    assert len(table) == 10
    assert table["n"].tolist() == [10] * 10
    assert table["predicted_mean"].iloc[0] == pytest.approx(predicted[:10].mean())
    assert table["observed_mean"].tolist() == pytest.approx([0.5] * 10)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sorted_pairwise_metrics_equal_the_libraries_on_large_tied_censored_samples(seed):
    # The pairwise metrics never form the n x n pairs (sorting, Fenwick tree); on samples with
    # many ties in scores and times and 40% censoring they still equal scikit-learn, SciPy and
    # lifelines on the full sample and on a bootstrap resample written out row by row.
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    n = 1500
    obs = np.round(rng.gamma(1.2, 3.0, n) - 1.0)
    pred = np.round(0.7 * obs + rng.normal(1.0, 2.5, n))
    y = (obs >= 5).astype(float)
    p = np.round(special.expit((pred - 5) / 2), 1)
    time = np.round(rng.exponential(2.0 * np.exp(-obs / 8.0)), 1)
    event = (rng.random(n) < 0.6).astype(float)
    ones = np.ones((1, n))
    assert m.auroc_batch(y, p, ones)[0] == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert m.auprc_batch(y, p, ones)[0] == pytest.approx(average_precision_score(y, p), rel=1e-12)
    assert m.c_index_batch(time, event, pred, ones)[0] == pytest.approx(
        concordance_index(time, -pred, event), rel=1e-12)
    assert m.spearman_batch(obs, pred, ones)[0] == pytest.approx(m.spearman(obs, pred), rel=1e-9)

    counts = m.bootstrap_counts(n, 3, seed=seed)
    rows = np.repeat(np.arange(n), counts[2].astype(int))
    assert m.auroc_batch(y, p, counts)[2] == pytest.approx(roc_auc_score(y[rows], p[rows]))
    assert m.c_index_batch(time, event, pred, counts)[2] == pytest.approx(
        concordance_index(time[rows], -pred[rows], event[rows]))
