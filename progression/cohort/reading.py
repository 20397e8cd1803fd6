"""Reading a cohort directory: its CSV files and options, checked, as one :class:`Cohort`.

:func:`read_cohort` checks the tables and that each image file exists inside the cohort
directory (a cheap ``stat``); decoding every image is left to
:func:`~progression.cohort.validate.validate_cohort` and the image cache. All problems of a
cohort are reported together rather than one per run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from progression.cohort.cells import Table, read_csv_table
from progression.cohort.checks import CheckContext, run_checks
from progression.cohort.container import Cohort
from progression.cohort.format import JOINT_SCORES, KEY_COLUMNS, OPTIONS_FILE, REQUIRED_FILES
from progression.cohort.problems import ValidationReport
from progression.scoring import DEFAULT_SYSTEM, SYSTEMS, scoring_system

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CohortOptions:
    """Options a cohort declares in its ``cohort.yaml`` (optional; every key optional).

    ``allow_external_images``: image paths may pass through symbolic links that leave the
    cohort directory (e.g. ``images/`` linking to an image store). Off by default, so a
    cohort's files never reach outside it unless its author says so.

    ``scoring``: the scoring system of the cohort's scores, ``svdh`` (default) or ``larsen``
    (:mod:`progression.scoring.systems`; docs/scoring.md).
    """

    allow_external_images: bool = False
    scoring: str = DEFAULT_SYSTEM


def read_options(root: Path, report: ValidationReport) -> CohortOptions:
    """``root/cohort.yaml`` as options; a problem in it is reported, the defaults are used."""
    path = root / OPTIONS_FILE
    if not path.is_file():
        return CohortOptions()
    fix = ("write options such as 'allow_external_images: true' or 'scoring: larsen', "
           "or remove the file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        report.add("error", OPTIONS_FILE, None, None, f"cannot be read as YAML ({exc})", fix)
        return CohortOptions()
    data = {} if data is None else data
    if not isinstance(data, dict):
        report.add("error", OPTIONS_FILE, None, None, "is not a mapping of option: value", fix)
        return CohortOptions()
    known = CohortOptions.__dataclass_fields__
    for key, value in data.items():
        if key not in known:
            report.add(
                "error", OPTIONS_FILE, None, str(key), f"unknown option '{key}'",
                f"use one of {', '.join(known)} (docs/cohort_format.md)",
            )
        elif key == "scoring":
            if str(value).strip().lower() not in SYSTEMS:
                report.add("error", OPTIONS_FILE, None, key, f"unknown scoring system '{value}'",
                           f"write 'scoring: ' and one of {', '.join(SYSTEMS)}")
        elif not isinstance(value, bool):
            report.add("error", OPTIONS_FILE, None, str(key), f"{key} must be true or false", fix)
    scoring = str(data.get("scoring", DEFAULT_SYSTEM)).strip().lower()
    return CohortOptions(
        **{k: v for k, v in data.items() if k in known and isinstance(v, bool)},
        scoring=scoring if scoring in SYSTEMS else DEFAULT_SYSTEM,
    )


def read_cohort(root: str | Path) -> Cohort:
    """Read and check the cohort directory ``root`` (format v1).

    Raises :class:`~progression.errors.CohortError` listing every error (file, line,
    column, what, fix). Warnings (suspicious but usable data) are logged. Image files
    are checked to exist inside ``root`` but not decoded; run ``progression validate``
    for that.
    """
    report, cohort, _ = check_tables(root)
    report.raise_on_errors()
    if report.warnings:
        logger.warning(
            "%s: %d warnings (first: %s); run `progression validate %s` for the full list",
            root,
            len(report.warnings),
            report.warnings[0].render(),
            root,
        )
    assert cohort is not None  # no errors -> parsed
    return cohort


def check_tables(root: str | Path) -> tuple[ValidationReport, Cohort | None, list[tuple[int, str]]]:
    """Check every table of ``root`` without decoding images.

    Returns the report, the Cohort (None when there are errors) and, for validation,
    ``(images.csv line, absolute path)`` of every image file that passed the path checks.
    """
    root = Path(root)
    report = ValidationReport(str(root))
    if not root.is_dir():
        report.add(
            "error",
            str(root),
            None,
            None,
            "cohort directory not found",
            "give the directory that holds patients.csv, visits.csv and images.csv",
        )
        return report, None, []
    tables: dict[str, Table | None] = {}
    for name in (*REQUIRED_FILES, JOINT_SCORES):
        path = root / name
        if not path.is_file():
            if name in REQUIRED_FILES:
                report.add(
                    "error",
                    name,
                    None,
                    None,
                    "required file is missing",
                    f"create {name} with columns {', '.join(KEY_COLUMNS[name])} "
                    "(see docs/cohort_format.md)",
                )
            tables[name] = None
            continue
        tables[name] = read_csv_table(path, name, report)
    options = read_options(root, report)
    ctx = CheckContext(
        report, root.resolve(), confined=True,
        allow_external_images=options.allow_external_images,
        scoring=scoring_system(options.scoring),
    )
    parts = run_checks(ctx, tables)
    cohort = None if parts is None else Cohort(root=ctx.root, scoring=options.scoring,
                                               **vars(parts))
    return report, cohort, ctx.image_files
