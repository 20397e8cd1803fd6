"""``validate_cohort``: every problem of a cohort directory in one report, images included.

On top of the table checks of :func:`~progression.cohort.tables.read_cohort` this decodes
every image once (header and pixels) in worker processes, so a corrupt, truncated or
pixel-less file is found before a training run trips over it. Nothing is written: the
cohort directory is left byte-identical, modification times included.
"""

from __future__ import annotations

from pathlib import Path

from progression.cohort.images import check_image
from progression.cohort.parallel import parallel_map
from progression.cohort.problems import ValidationReport
from progression.cohort.tables import IMAGES, check_tables
from progression.errors import ImageError

_IMAGE_FIX = "replace the file with a readable export, or correct its path in images.csv"


def validate_cohort(
    root: str | Path, progress: bool = True, workers: int | None = None
) -> ValidationReport:
    """Check the cohort directory ``root`` and return one report of every problem found.

    Never raises for bad data: problems are errors (the cohort cannot be used until they
    are fixed) or warnings (suspicious but usable). ``workers`` processes decode the
    images (None = one per CPU core for large cohorts); ``progress`` shows a bar.
    """
    report, _, image_files = check_tables(root)
    results = parallel_map(
        _check_one, [path for _, path in image_files], workers, progress, "checking images"
    )
    for (line, path), (error, warnings) in zip(image_files, results):
        if error is not None:
            report.add("error", IMAGES, line, "path", error, _IMAGE_FIX)
        for warning in warnings:
            report.add(
                "warning",
                IMAGES,
                line,
                "path",
                f"{path}: {warning}",
                "fix the file's header if you can; the image is still used",
            )
    return report


def _check_one(path: str) -> tuple[str | None, list[str]]:
    """(error message or None, warnings) for one image; runs in a worker process."""
    try:
        return None, check_image(path)
    except ImageError as exc:
        return str(exc), []
    except Exception as exc:  # noqa: BLE001 - validation reports, it never crashes
        return f"{path}: unexpected failure while reading ({type(exc).__name__}: {exc})", []
