"""Check a cohort directory (format v1) and report every problem found.

Exit status 0 when there is no error (warnings allowed), 1 when there are errors.
Only reads: the cohort directory is left byte-identical.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cohort", metavar="DIR", help="cohort directory (patients.csv, visits.csv, images.csv)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the full report as JSON to FILE")
    parser.add_argument(
        "--quiet", action="store_true", help="print only the summary line; no progress bar"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes decoding images (default: one per core)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from progression.cohort import validate_cohort
    from progression.errors import ConfigError
    from progression.io import atomic_write_text

    if args.json:
        target = Path(args.json).resolve()
        cohort = Path(args.cohort).resolve()
        if target == cohort or cohort in target.parents:
            raise ConfigError(
                f"--json {args.json} is inside the cohort directory; validate never writes "
                "there: choose a path outside it"
            )
    report = validate_cohort(args.cohort, progress=not args.quiet, workers=args.workers)
    # --quiet: only the verdict line; the full list stays available through --json.
    text = report.render(max_per_file=100)
    print(text.splitlines()[-1] if args.quiet else text)
    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    return 0 if report.ok else 1
