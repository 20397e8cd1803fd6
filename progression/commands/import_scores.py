"""Merge reader scores (CSV or Excel; long or wide form) into a copy of a cohort.

Long form: patient_id, visit_date, joint, erosion, jsn (one row per joint). Wide form:
one row per visit, one column per joint and component (RA2-DREAM style LH_mcp2_E,
RF_mtp5_J) and optional visit totals (svdh_total, svdh_erosion, svdh_jsn). Another
centre's joint names are translated by the bundled joint map and --joint-map.
COHORT is only read; OUT is COHORT with joint_scores.csv and visits.csv updated.

Example: progression import-scores scores.xlsx --cohort my_cohort --out my_cohort_scored
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="score sheet: .csv, .xlsx or .xlsm")
    parser.add_argument("--cohort", required=True, help="cohort to add the scores to (read only)")
    parser.add_argument("--out", required=True, metavar="COHORT2", help="new cohort directory")
    parser.add_argument(
        "--joint-map", metavar="MAP.yaml",
        help="your joint names -> this project's (added to the bundled map; docs/importing.md)",
    )  # fmt: skip
    parser.add_argument(
        "--ignore-unknown-joints", action="store_true",
        help="skip joints no map knows, with a warning (default: they are errors)",
    )  # fmt: skip
    parser.add_argument("--sheet", metavar="NAME", help="Excel sheet (default: the first)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty COHORT2")


def run(args: argparse.Namespace) -> int:
    from progression.ingest import import_scores

    result = import_scores(
        args.file,
        args.cohort,
        args.out,
        joint_map=args.joint_map,
        ignore_unknown_joints=args.ignore_unknown_joints,
        sheet=args.sheet,
        overwrite=args.overwrite,
    )
    print(result.summary())
    return 0
