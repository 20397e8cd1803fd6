"""SvdH / Larsen definitions, aggregation of joint grades, and progression thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from progression.errors import CohortError
from progression.scoring import (
    JOINTS,
    LARSEN_JOINTS,
    LARSEN_MAX_TOTAL,
    REGION_MAX_EROSION,
    REGION_MAX_JSN,
    REGIONS,
    SVDH_MAX_EROSION,
    SVDH_MAX_JSN,
    SVDH_MAX_TOTAL,
    aggregate_joint_scores,
    exceeds_sdc,
    is_rapid,
    joint_by_name,
    joints_in_region,
)


def _full_visit(patient: str, date: str, erosion: int = 0, jsn: int = 0) -> list[dict]:
    """Every SvdH joint of one visit with the same grade (capped at the joint's maximum)."""
    return [
        {
            "patient_id": patient,
            "visit_date": date,
            "joint": j.name,
            "erosion": min(erosion, j.erosion_max) if j.erosion_max is not None else np.nan,
            "jsn": min(jsn, j.jsn_max) if j.jsn_max is not None else np.nan,
        }
        for j in JOINTS
    ]


def test_svdh_maxima_match_van_der_heijde():
    assert (SVDH_MAX_EROSION, SVDH_MAX_JSN, SVDH_MAX_TOTAL) == (280, 168, 448)
    assert REGION_MAX_EROSION == {
        "hand_left": 80,
        "hand_right": 80,
        "foot_left": 60,
        "foot_right": 60,
    }
    assert REGION_MAX_JSN == {"hand_left": 60, "hand_right": 60, "foot_left": 24, "foot_right": 24}


def test_each_hand_has_16_erosion_and_15_jsn_sites_and_each_foot_6_joints():
    for region in REGIONS:
        joints = joints_in_region(region)
        n_ero = sum(j.erosion_max is not None for j in joints)
        n_jsn = sum(j.jsn_max is not None for j in joints)
        assert (n_ero, n_jsn) == ((16, 15) if region.startswith("hand") else (6, 6))
    assert joint_by_name("hand_left_radius").jsn_max is None
    assert joint_by_name("hand_right_cmc4").erosion_max is None
    assert joint_by_name("foot_right_mtp5").erosion_max == 10
    with pytest.raises(KeyError, match="hand_left_mcp2"):
        joint_by_name("hand_left_dip2")


def test_aggregate_sums_erosion_and_jsn_per_visit_and_region():
    rows = _full_visit("p1", "2020-01-01")
    grades = {"hand_left_mcp2": (3, 2), "hand_left_radius": (4, None), "foot_right_mtp5": (7, 1)}
    for row in rows:
        if row["joint"] in grades:
            ero, jsn = grades[row["joint"]]
            row["erosion"] = ero
            row["jsn"] = np.nan if jsn is None else jsn
    rows += _full_visit("p1", "2021-01-01", erosion=99, jsn=99)  # every joint at its max
    out = aggregate_joint_scores(pd.DataFrame(rows)).set_index("visit_date")
    first = out.loc["2020-01-01"]
    assert (first.svdh_erosion, first.svdh_jsn, first.svdh_total) == (14, 3, 17)
    assert (first.hand_left_erosion, first.hand_left_jsn, first.hand_left_total) == (7, 2, 9)
    assert (first.foot_right_erosion, first.foot_right_jsn) == (7, 1)
    assert first.hand_right_total == 0
    assert out.loc["2021-01-01", "svdh_total"] == 448


def test_aggregate_gives_nan_for_an_incomplete_region_and_total_but_keeps_complete_regions():
    rows = [r for r in _full_visit("p1", "2020-01-01", erosion=1, jsn=1)
            if r["joint"] != "foot_left_mtp3"]  # fmt: skip
    out = aggregate_joint_scores(pd.DataFrame(rows)).iloc[0]
    assert np.isnan(out.foot_left_erosion) and np.isnan(out.foot_left_jsn)
    assert np.isnan(out.svdh_total) and np.isnan(out.svdh_erosion)
    assert out.hand_left_erosion == 16 and out.hand_left_jsn == 15


@pytest.mark.parametrize(
    ("joint", "erosion", "jsn", "message"),
    [
        ("hand_left_dip2", 1, 1, "unknown joint 'hand_left_dip2'"),
        ("hand_left_mcp2", 6, 1, "outside the SvdH grades 0-5"),
        ("foot_left_mtp1", 1, 5, "outside the SvdH grades 0-4"),
        ("hand_left_radius", 1, 2, "has no jsn component"),
    ],
)
def test_aggregate_rejects_bad_rows_naming_the_line(joint, erosion, jsn, message):
    rows = _full_visit("p1", "2020-01-01")
    rows[3] = {"patient_id": "p1", "visit_date": "2020-01-01", "joint": joint,
               "erosion": erosion, "jsn": jsn}  # fmt: skip
    with pytest.raises(CohortError, match=message) as info:
        aggregate_joint_scores(pd.DataFrame(rows))
    assert "joint_scores.csv line 5" in str(info.value)


def test_larsen_1995_revision_has_32_units_and_maximum_160():
    assert len(LARSEN_JOINTS) == 32
    assert LARSEN_MAX_TOTAL == 160
    assert "hand_left_wrist_q3" in {j.name for j in LARSEN_JOINTS}
    assert not any(j.site in ("mcp1", "mtp1", "ip") for j in LARSEN_JOINTS)


def test_is_rapid_uses_five_units_per_year():
    assert is_rapid(5.0, 1.0) and is_rapid(10.0, 2.0)
    assert not is_rapid(4.9, 1.0) and not is_rapid(9.0, 2.0)
    np.testing.assert_array_equal(is_rapid([0, 2.5, 3], [0.5, 0.5, 0.5]), [False, True, True])
    with pytest.raises(ValueError, match="years must be > 0"):
        is_rapid(5.0, 0.0)


def test_exceeds_sdc_defaults_to_five_units_and_takes_a_custom_sdc():
    assert not exceeds_sdc(5.0) and exceeds_sdc(5.5)
    assert exceeds_sdc(3.0, sdc=2.0)
