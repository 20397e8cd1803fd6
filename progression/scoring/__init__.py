"""Scoring systems for radiographic damage in RA: SvdH, Larsen, and progression thresholds.

Which system a cohort uses, with its maximum and rapid threshold: :mod:`.systems`.

See docs/scoring.md for the joint vocabulary and the rules for missing joints.
"""

from __future__ import annotations

from progression.scoring.larsen import (
    LARSEN_GRADE_MAX,
    LARSEN_JOINTS,
    LARSEN_MAX_TOTAL,
    LarsenJoint,
)
from progression.scoring.svdh import (
    EROSION_MAX,
    JOINT_NAMES,
    JOINTS,
    JSN_MAX,
    REGION_MAX_EROSION,
    REGION_MAX_JSN,
    REGION_MAX_TOTAL,
    REGIONS,
    SVDH_MAX_EROSION,
    SVDH_MAX_JSN,
    SVDH_MAX_TOTAL,
    Joint,
    aggregate_joint_scores,
    joint_by_name,
    joints_in_region,
)
from progression.scoring.systems import (
    DEFAULT_SYSTEM,
    LARSEN,
    SVDH,
    SYSTEMS,
    ScoringSystem,
    scoring_system,
)
from progression.scoring.thresholds import (
    DEFAULT_SDC,
    LARSEN_PER_SVDH,
    RAPID_RATE,
    exceeds_sdc,
    is_rapid,
)

__all__ = [
    "DEFAULT_SDC",
    "DEFAULT_SYSTEM",
    "LARSEN",
    "LARSEN_PER_SVDH",
    "SVDH",
    "SYSTEMS",
    "ScoringSystem",
    "scoring_system",
    "EROSION_MAX",
    "JOINTS",
    "JOINT_NAMES",
    "JSN_MAX",
    "LARSEN_GRADE_MAX",
    "LARSEN_JOINTS",
    "LARSEN_MAX_TOTAL",
    "RAPID_RATE",
    "REGIONS",
    "REGION_MAX_EROSION",
    "REGION_MAX_JSN",
    "REGION_MAX_TOTAL",
    "SVDH_MAX_EROSION",
    "SVDH_MAX_JSN",
    "SVDH_MAX_TOTAL",
    "Joint",
    "LarsenJoint",
    "aggregate_joint_scores",
    "exceeds_sdc",
    "is_rapid",
    "joint_by_name",
    "joints_in_region",
]
