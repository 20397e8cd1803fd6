"""Sample-size formulas against hand-computed textbook values."""

from __future__ import annotations

import pytest

from progression.enrich.sample_size import (
    ArmSizes,
    inflate_for_dropout,
    n_two_means,
    n_two_proportions,
    power_two_means,
    power_two_proportions,
)
from progression.errors import ProgressionError


def test_two_means_textbook_63_per_arm_with_z_and_64_with_t():
    # 2 * (1.95996 + 0.84162)^2 * 1^2 / 0.5^2 = 62.79 -> 63 (Chow, Shao & Wang 3.2.1);
    # the exact t-test needs one more: power(63) = 0.795, power(64) = 0.801.
    assert n_two_means(0.5, 1.0, alpha=0.05, power=0.8, method="z") == ArmSizes(63, 63)
    assert n_two_means(0.5, 1.0, alpha=0.05, power=0.8, method="t") == ArmSizes(64, 64)
    assert power_two_means(63, 63, 0.5, 1.0) < 0.8 <= power_two_means(64, 64, 0.5, 1.0)


def test_two_means_allocation_two_to_one():
    # n_control = 7.849 * (1 + 1/2) / 0.25 = 47.09 -> 48; n_treated = 2 * 47.09 = 94.2 -> 95
    assert n_two_means(0.5, 1.0, allocation=2.0, method="z") == ArmSizes(48, 95)


def test_two_means_smaller_treated_sd_needs_fewer_patients():
    # sd_treated = 0.5: 7.849 * (1 + 0.25) / 0.25 = 39.2 -> 40 (z)
    assert n_two_means(0.5, 1.0, sd_treated=0.5, method="z") == ArmSizes(40, 40)
    # Welch t (df ~ 58): the smallest n reaching 0.8 is one more than the z answer
    assert n_two_means(0.5, 1.0, sd_treated=0.5, method="t") == ArmSizes(41, 41)
    assert power_two_means(40, 40, 0.5, 1.0, 0.5) < 0.8 <= power_two_means(41, 41, 0.5, 1.0, 0.5)


def test_two_proportions_textbook_216_per_arm_with_continuity_correction():
    # Stata `sampsi 0.25 0.4` (alpha 0.05, power 0.9): n' = 202.8 uncorrected -> 203;
    # Fleiss-Tytun-Ury correction n'/4 (1 + sqrt(1 + 4 / (n' 0.15)))^2 = 215.9 -> 216.
    assert n_two_proportions(0.25, 0.40, alpha=0.05, power=0.9) == ArmSizes(216, 216)
    assert n_two_proportions(0.25, 0.40, power=0.9, continuity=False) == ArmSizes(203, 203)
    # the order of the two proportions does not matter
    assert n_two_proportions(0.40, 0.25, power=0.9) == ArmSizes(216, 216)


def test_two_proportions_power_inverts_the_size():
    assert power_two_proportions(216, 0.25, 0.40) == pytest.approx(0.9, abs=0.002)
    assert power_two_proportions(203, 0.25, 0.40, continuity=False) == pytest.approx(0.9, abs=0.002)


def test_dropout_divides_by_the_completing_fraction():
    # 63 / 0.9 = 70 exactly; 64 / 0.8 = 80; 63 / 0.85 = 74.1 -> 75
    assert inflate_for_dropout(ArmSizes(63, 63), 0.1) == ArmSizes(70, 70)
    assert inflate_for_dropout(ArmSizes(64, 128), 0.2) == ArmSizes(80, 160)
    assert inflate_for_dropout(ArmSizes(63, 63), 0.15) == ArmSizes(75, 75)
    assert inflate_for_dropout(ArmSizes(63, 63), 0.0) == ArmSizes(63, 63)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: n_two_means(0.0, 1.0), "must be > 0"),
        (lambda: n_two_means(0.5, 1.0, alpha=1.5), "alpha"),
        (lambda: n_two_means(0.5, 1.0, power=1.0), "power"),
        (lambda: n_two_means(0.5, 1.0, allocation=0), "allocation"),
        (lambda: n_two_proportions(0.3, 0.3), "equal"),
        (lambda: n_two_proportions(1.2, 0.3), r"in \[0, 1\]"),
        (lambda: inflate_for_dropout(ArmSizes(10, 10), 1.0), "dropout"),
    ],
)
def test_impossible_designs_are_clear_errors(call, message):
    with pytest.raises(ProgressionError, match=message):
        call()
