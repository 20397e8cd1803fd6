"""``validate_cohort``: every problem of a cohort directory in one report, images included.

On top of the table checks of :func:`~progression.cohort.reading.read_cohort` this decodes
every image once (header and pixels) in worker processes, so a corrupt, truncated or
pixel-less file is found before a training run trips over it. Nothing is written: the
cohort directory is left byte-identical, modification times included.
"""

from __future__ import annotations

from pathlib import Path

from progression.cohort.format import IMAGES
from progression.cohort.parallel import auto_workers, parallel_map
from progression.cohort.problems import ValidationReport
from progression.cohort.reading import check_tables
from progression.cohort.workers import inspect_image

_IMAGE_FIX = "replace the file with a readable export, or correct its path in images.csv"


def validate_cohort(
    root: str | Path, progress: bool = True, workers: int | None = None
) -> ValidationReport:
    """Check the cohort directory ``root`` and return one report of every problem found.

    Never raises for bad data: problems are errors (the cohort cannot be used until they
    are fixed) or warnings (suspicious but usable). ``workers`` processes decode the
    images (None = one per CPU core when the job is large enough to gain); ``progress`` shows a bar.
    """
    report, _, image_files = check_tables(root)
    paths = [path for _, path in image_files]
    workers = auto_workers(paths) if workers is None else workers
    results = parallel_map(inspect_image, paths, workers, progress, "checking images")
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
