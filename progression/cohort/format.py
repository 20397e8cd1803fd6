"""Format v1 as constants: the files of a cohort, their key columns, score ranges, tolerances.

One place for the numbers and names the reader and every check share (docs/cohort_format.md).
"""

from __future__ import annotations

import re

from progression.columns import KNOWN_COVARIATES, SCORE_COLUMNS
from progression.scoring import SVDH_MAX_EROSION, SVDH_MAX_JSN, SVDH_MAX_TOTAL

PATIENTS, VISITS, IMAGES, JOINT_SCORES = (
    "patients.csv",
    "visits.csv",
    "images.csv",
    "joint_scores.csv",
)
REQUIRED_FILES = (PATIENTS, VISITS, IMAGES)
# Optional cohort-level options (YAML mapping), e.g. ``allow_external_images: true``.
OPTIONS_FILE = "cohort.yaml"
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    PATIENTS: ("patient_id",),
    VISITS: ("patient_id", "visit_date"),
    IMAGES: ("patient_id", "visit_date", "region", "path"),
    JOINT_SCORES: ("patient_id", "visit_date", "joint", "erosion", "jsn"),
}
SCORE_MAX = dict(zip(SCORE_COLUMNS, (SVDH_MAX_TOTAL, SVDH_MAX_EROSION, SVDH_MAX_JSN)))
# Readers round erosion, JSN and total separately: up to 0.5 SvdH units each.
TOTAL_TOLERANCE = 1.5
# Plausible ranges (units) of the covariates the clinical baselines know; outside -> warning.
PLAUSIBLE_RANGES: dict[str, tuple[float, float, str]] = {
    c.name: (*c.plausible, c.unit) for c in KNOWN_COVARIATES.values() if c.plausible is not None
}
# Cells read as "not recorded" (pandas' most common missing markers).
MISSING_TOKENS = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL"})
EARLIEST_YEAR = 1900
DATE_PATTERN = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
WINDOWS_DRIVE = re.compile(r"[A-Za-z]:")  # a Windows drive: C:\images or C:images
DATE_FIX = "write the date as YYYY-MM-DD, e.g. 2021-03-15"
# A text column with more distinct values than this (and mostly unique) looks like free text.
MAX_LEVELS = 50
