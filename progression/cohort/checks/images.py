"""images.csv: one radiograph per patient, visit and region, a safe path to an existing file.

Paths are checked as text first, so a path that leaves the cohort directory is never opened
or even looked at on disk. Then the path is resolved (symbolic links included) and must still
lie inside the cohort, unless the cohort opts in to links that leave it
(``allow_external_images: true`` in ``cohort.yaml``, docs/cohort_format.md).
"""

from __future__ import annotations

import difflib
import os
import stat as stat_module
from datetime import date

from progression.cohort.cells import Table
from progression.cohort.checks.context import CheckContext, VisitKeys
from progression.cohort.format import OPTIONS_FILE, WINDOWS_DRIVE
from progression.cohort.images import SUPPORTED_EXTENSIONS
from progression.scoring import REGIONS


def check_images(
    ctx: CheckContext, table: Table, visit_keys: VisitKeys | None
) -> tuple[list[date | None], list[str | None]]:
    """(date per row, absolute path per row or None) of images.csv."""
    ids, dates = ctx.key_cells(table, with_date=True)
    for i, region in enumerate(table.frame["region"].tolist()):
        if region not in REGIONS:
            close = difflib.get_close_matches(region.lower(), REGIONS, n=1)
            ctx.error(
                table,
                i,
                "region",
                f"unknown region '{region}'" + (f" (did you mean {close[0]}?)" if close else ""),
                f"use one of {', '.join(REGIONS)}",
            )
    ctx.duplicates(
        table, ["patient_id", "visit_date", "region"], "image (patient / date / region)"
    )
    abs_paths = _image_files(ctx, table)
    if len(table.frame) > 1 and ctx.n_missing_images == len(table.frame):
        # one cause, not one per row: the wrong directory, or tables without their films
        ctx.error(
            table, None, "path",
            f"none of the {len(table.frame)} image files listed exists under "
            f"{ctx.root or 'the working directory'}",
            "give the cohort's own directory (paths in images.csv are relative to it); a "
            "cohort simulated with --no-images has tables only: simulate it again without "
            "--no-images to get its radiographs",
        )
    if visit_keys is not None:
        ctx.rows_without_visit(table, ids, dates, visit_keys)
    return dates, abs_paths


def _image_files(ctx: CheckContext, table: Table) -> list[str | None]:
    """Each row's checked absolute path (None where a problem was reported)."""
    abs_paths: list[str | None] = []
    seen_paths: dict[str, int] = {}
    rows = list(map(tuple, table.frame.to_numpy()))
    for i, text in enumerate(table.frame["path"].tolist()):
        resolved = image_path(ctx, table, i, text)
        abs_paths.append(resolved)
        if resolved is None:
            continue
        ctx.image_files.append((int(table.lines[i]), resolved))
        first = seen_paths.setdefault(resolved, i)
        if first != i and rows[i] != rows[first]:  # identical rows: reported as duplicates
            ctx.warn(
                table,
                i,
                "path",
                f"the same file is also used on line {table.lines[first]}",
                "check that each row points at its own radiograph",
            )
    return abs_paths


def image_path(ctx: CheckContext, table: Table, i: int, text: str) -> str | None:
    """Absolute path of a safe, existing image file, else None (problem reported)."""
    if not text:
        ctx.error(
            table, i, "path", "path is empty", "give the image file, relative to the cohort directory"
        )
        return None
    if "\x00" in text:
        ctx.error(table, i, "path", "path contains a NUL character", "correct the path")
        return None
    full = _joined_path(ctx, table, i, text)
    if full is None:
        return None
    suffix = os.path.splitext(full)[1].lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        ctx.error(
            table,
            i,
            "path",
            f"unsupported file type '{suffix or '(none)'}' for {text}",
            f"convert the image to one of {', '.join(SUPPORTED_EXTENSIONS)}",
        )
        return None
    if ctx.confined and not ctx.allow_external_images and not _stays_inside(ctx, table, i, text, full):
        return None
    return _existing_file(ctx, table, i, text, full)


def _joined_path(ctx: CheckContext, table: Table, i: int, text: str) -> str | None:
    """The path joined to the root, refused as text when it is absolute or climbs out."""
    # Windows-style separators are accepted so a cohort written on Windows reads here.
    posix = text.replace("\\", "/")
    is_absolute = posix.startswith("/") or WINDOWS_DRIVE.match(posix) is not None
    if not ctx.confined:
        return os.path.abspath(
            posix if is_absolute or ctx.root is None else os.path.join(str(ctx.root), posix)
        )
    if is_absolute:
        ctx.error(
            table,
            i,
            "path",
            f"'{text}' is an absolute path",
            "give the path relative to the cohort directory (copy or link the images inside it)",
        )
        return None
    normal = os.path.normpath(posix)
    if normal == ".." or normal.startswith("../"):
        ctx.error(
            table,
            i,
            "path",
            f"'{text}' points outside the cohort directory",
            "keep images inside the cohort directory and give paths relative to it",
        )
        return None
    return os.path.join(str(ctx.root), normal)


def _stays_inside(ctx: CheckContext, table: Table, i: int, text: str, full: str) -> bool:
    """True when ``full``, symbolic links resolved, lies inside the cohort directory."""
    root = str(ctx.root)
    real = os.path.realpath(full)
    if os.path.commonpath([real, root]) == root:
        return True
    ctx.error(
        table,
        i,
        "path",
        f"'{text}' is or passes through a symbolic link that leaves the cohort directory "
        f"(it resolves to {real})",
        "copy the file into the cohort directory; or, if links to an image store outside the "
        f"cohort are intended, opt in with the line 'allow_external_images: true' in "
        f"{os.path.join(root, OPTIONS_FILE)} (docs/cohort_format.md)",
    )
    return False


def _existing_file(ctx: CheckContext, table: Table, i: int, text: str, full: str) -> str | None:
    """``full`` when it is a non-empty regular file (its size and mtime recorded)."""
    try:
        stat = os.stat(full)
    except FileNotFoundError:
        ctx.n_missing_images += 1
        ctx.error(
            table, i, "path", f"image file {text} not found", "correct the path or add the file"
        )
        return None
    except OSError as exc:
        ctx.error(
            table, i, "path", f"image file {text} cannot be read ({exc.strerror})", "make it readable"
        )
        return None
    if not stat_module.S_ISREG(stat.st_mode):
        ctx.error(table, i, "path", f"{text} is not a file", "point the path at an image file")
        return None
    if stat.st_size == 0:
        ctx.error(table, i, "path", f"image file {text} is empty (0 bytes)", "copy the image again")
        return None
    ctx.image_stats[full] = (stat.st_size, stat.st_mtime_ns)
    return full
