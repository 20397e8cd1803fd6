"""Build a cohort (format v1) from a DICOM tree such as a PACS export.

Walks SRC at any depth (any file names; DICOMDIR not needed), reads headers only and
places each file by patient (PatientID), visit (StudyDate; studies a few days apart
merge) and region (BodyPartExamined, ImageLaterality/Laterality, SeriesDescription).
Writes patients.csv, visits.csv (scores empty), images.csv, the images, and
unplaced.csv listing every file not placed with its reason. SRC is only read.

Example: progression import-dicom pacs_export/ --out my_cohort --pseudonymize "$SALT"
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="folder of DICOM files (any depth)")
    parser.add_argument("--out", required=True, metavar="COHORT", help="new cohort directory")
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--copy", dest="mode", action="store_const", const="copy",
        help="copy the files into COHORT/images (default)",
    )  # fmt: skip
    how.add_argument(
        "--link", dest="mode", action="store_const", const="link",
        help="symbolic links to the files in SRC instead of copies; validation refuses links "
        "leaving the cohort unless you opt in to them (docs/importing.md)",
    )  # fmt: skip
    parser.set_defaults(mode="copy")
    parser.add_argument(
        "--pseudonymize", metavar="SALT",
        help="replace patient ids by salted hashes (HMAC-SHA256) in tables and copied files",
    )  # fmt: skip
    parser.add_argument(
        "--key-table", metavar="FILE",
        help="with --pseudonymize: write pseudonym -> original id to FILE (outside COHORT)",
    )  # fmt: skip
    parser.add_argument(
        "--visit-window-days", type=int, default=7, metavar="N",
        help="studies of a patient within N days of a visit's first study join that visit "
        "(default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty COHORT")
    parser.add_argument(
        "--workers", type=int, default=None,
        help="processes reading headers (default: one per core for 4,000 files or more)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from progression.ingest import import_dicom

    result = import_dicom(
        args.src,
        args.out,
        mode=args.mode,
        salt=args.pseudonymize,
        key_table=args.key_table,
        visit_window_days=args.visit_window_days,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(result.summary("copied" if args.mode == "copy" else "linked"))
    return 0
