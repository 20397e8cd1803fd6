"""Cohort format v1: read and validate the tables, load radiographs, cache decoded images.

See docs/cohort_format.md for the directory layout and every check.
"""

from __future__ import annotations

from progression.cohort.cache import ImageCache
from progression.cohort.images import SUPPORTED_EXTENSIONS, check_image, load_image
from progression.cohort.problems import Problem, ValidationReport
from progression.cohort.tables import Cohort, CohortSchema, read_cohort
from progression.cohort.validate import validate_cohort

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Cohort",
    "CohortSchema",
    "ImageCache",
    "Problem",
    "ValidationReport",
    "check_image",
    "load_image",
    "read_cohort",
    "validate_cohort",
]
