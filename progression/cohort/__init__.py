"""Cohort format v1: read and validate the tables, load radiographs, cache decoded images.

Modules: ``format`` (file names, key columns, ranges), ``cells`` (a CSV file or DataFrame as
text cells), ``checks/`` (every rule, one module per table), ``container`` (the Cohort),
``reading`` (read_cohort, cohort.yaml options), ``validate`` (tables + decoding every image),
``images`` and ``cache`` (radiographs).

See docs/cohort_format.md for the directory layout and every check. Names are imported
on first use, so an image-decoding worker process does not pay for pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "SUPPORTED_EXTENSIONS": "images",
    "check_image": "images",
    "load_image": "images",
    "ImageCache": "cache",
    "Problem": "problems",
    "ValidationReport": "problems",
    "Cohort": "container",
    "CohortError": "container",
    "CohortOptions": "reading",
    "CohortSchema": "schema",
    "read_cohort": "reading",
    "validate_cohort": "validate",
}
__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Cohort",
    "CohortError",
    "CohortOptions",
    "CohortSchema",
    "ImageCache",
    "Problem",
    "ValidationReport",
    "check_image",
    "load_image",
    "read_cohort",
    "validate_cohort",
]

if TYPE_CHECKING:
    from progression.cohort.cache import ImageCache
    from progression.cohort.container import Cohort
    from progression.cohort.images import SUPPORTED_EXTENSIONS, check_image, load_image
    from progression.cohort.problems import Problem, ValidationReport
    from progression.cohort.reading import CohortOptions, read_cohort
    from progression.cohort.schema import CohortSchema
    from progression.cohort.validate import validate_cohort
    from progression.errors import CohortError


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'progression.cohort' has no attribute '{name}'")
    return getattr(importlib.import_module(f"progression.cohort.{_EXPORTS[name]}"), name)
