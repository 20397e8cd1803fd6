"""Functions that run in image-decoding worker processes.

They live apart from the table code so a spawned worker imports only numpy, Pillow and
pydicom (about a second less start-up than with pandas), and they never raise: every
outcome comes back as a value the parent turns into a report entry or a cache slot.
"""

from __future__ import annotations

import os

import numpy as np

from progression.cohort.images import check_image, load_image
from progression.errors import ImageError


def inspect_image(path: str) -> tuple[str | None, list[str]]:
    """(error message or None, warnings) for one image file."""
    try:
        return None, check_image(path)
    except ImageError as exc:
        return str(exc), []
    except Exception as exc:  # noqa: BLE001 - validation reports, it never crashes
        return f"{path}: unexpected failure while reading ({type(exc).__name__}: {exc})", []


def decode_u8(job: tuple[str, int]) -> tuple[bytes | None, str | None, int, int]:
    """(uint8 pixels = round(255 x), error, mtime_ns, file size) of one image at ``size``.

    The file is stat-ed before decoding, so a file replaced during the decode is seen as
    stale next time rather than cached under its new mtime with old pixels.
    """
    path, size = job
    try:
        stat = os.stat(path)
        image = load_image(path, size)
    except (ImageError, OSError) as exc:
        return None, str(exc), 0, 0
    return np.rint(image * 255.0).astype(np.uint8).tobytes(), None, stat.st_mtime_ns, stat.st_size
