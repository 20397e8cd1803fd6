"""Every check of format v1, one module per table (docs/cohort_format.md "What validate checks").

- :mod:`.patients`, :mod:`.visits`, :mod:`.images`, :mod:`.joint_scores`: the rules of one
  file each (and those tying it to the others);
- :mod:`.covariates`: typing the covariate columns (numeric or categorical) and their ranges;
- :mod:`.context`: the report and the cell checks all tables share;
- :mod:`.build`: the typed DataFrames of a cohort once every check passed.

Adding a rule means adding it to the module of its table; :func:`run_checks` calls them all.
"""

from __future__ import annotations

from progression.cohort.cells import Table
from progression.cohort.checks.build import CohortFrames, Parsed, build_parts
from progression.cohort.checks.context import CheckContext, VisitKeys
from progression.cohort.checks.covariates import check_static_or_per_visit, split_covariates
from progression.cohort.checks.images import check_images
from progression.cohort.checks.joint_scores import (
    check_joint_scores,
    check_joints_match_totals,
    check_larsen_joint_scores,
)
from progression.cohort.checks.patients import (
    check_patients,
    check_patients_have_images,
    check_patients_have_visits,
)
from progression.cohort.checks.visits import check_score_decreases, check_visits
from progression.cohort.format import IMAGES, JOINT_SCORES, PATIENTS, VISITS
from progression.columns import SCORE_COLUMNS
from progression.scoring import LARSEN, SVDH

__all__ = ["CheckContext", "CohortFrames", "run_checks"]


def run_checks(ctx: CheckContext, tables: dict[str, Table | None]) -> CohortFrames | None:
    """Check every table, adding problems to ``ctx.report``; the cohort's parts if all is well."""
    patients = ctx.required_columns(tables.get(PATIENTS))
    visits = ctx.required_columns(tables.get(VISITS))
    images = ctx.required_columns(tables.get(IMAGES))
    svdh = ctx.scoring.name == SVDH.name
    # Larsen grades are checked, not kept: the per-joint model head reads SvdH grades only.
    larsen_joints = None if svdh else tables.get(JOINT_SCORES)
    joints = ctx.required_columns(tables.get(JOINT_SCORES)) if svdh else None

    parsed = Parsed()
    patient_rows: dict[str, int] = {}
    if patients is not None:
        patient_rows, parsed.births = check_patients(ctx, patients)
    visit_keys: VisitKeys | None = None
    if visits is not None:
        visit_keys, parsed.visit_dates = check_visits(ctx, visits, parsed.births)
    if images is not None:
        parsed.image_dates, parsed.abs_paths = check_images(ctx, images, visit_keys)
    if joints is not None:
        parsed.joint_dates = check_joint_scores(ctx, joints, visit_keys)
    if larsen_joints is not None:
        check_larsen_joint_scores(ctx, larsen_joints, visits, visit_keys)

    if patients is not None and visits is not None:
        check_patients_have_visits(ctx, patients, patient_rows, visits)
    if patients is not None and images is not None:
        check_patients_have_images(ctx, patients, patient_rows, images)

    ctx.report.n_patients = len(patient_rows)
    ctx.report.n_visits = len(visit_keys or {})
    ctx.report.n_images = 0 if images is None else len(images.frame)
    if patients is not None and not patient_rows:
        ctx.error(patients, None, None, "cohort is empty: no patients", "add one row per patient")

    if patients is not None:
        parsed.static = split_covariates(ctx, patients, exclude=("patient_id", "birth_date"))
    if visits is not None:
        parsed.per_visit = split_covariates(
            ctx, visits, exclude=("patient_id", "visit_date", *SCORE_COLUMNS, LARSEN.total_column)
        )
        check_static_or_per_visit(ctx, visits, parsed.static)
        if joints is not None and not ctx.has_errors(joints):
            check_joints_match_totals(ctx, joints, visits, parsed.visit_dates, parsed.joint_dates)
        check_score_decreases(ctx, visits, parsed.visit_dates)

    if not ctx.report.ok or patients is None or visits is None or images is None:
        return None
    return build_parts(patients, visits, images, joints, parsed, ctx.image_stats,
                       ctx.scoring.total_column)
