"""A new output directory that appears whole or not at all.

Commands that build a cohort write into a hidden sibling directory and rename it onto
the target at the end, so an interrupted import never leaves a half cohort that
validates. A non-empty target is refused unless the user passes ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from progression.errors import ConfigError


def check_target(out: Path, overwrite: bool) -> None:
    """Raise ConfigError when ``out`` is a file, or a non-empty directory without overwrite."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"--out {out} is not empty; choose a new directory or add --overwrite to replace it"
        )


@contextlib.contextmanager
def building(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory next to ``out``; on success it replaces ``out``."""
    check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; give what mkdir would
    try:
        yield tmp
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "cohort")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
