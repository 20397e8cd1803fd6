"""Helpers for the reliability tests (no tests in this file).

:func:`kill_while_writing` runs a ``progression`` command in a subprocess and SIGKILLs it at
the moment it starts to put a new version of one output file in place, the worst moment for
a crash. The subprocess is this file run as a script: it watches, without changing
anything, every way Python can publish a file (``open``/``os.open`` of the file for writing,
``os.replace``/``os.rename`` onto it) and, at the chosen write, writes a marker and waits to
be killed. A writer that writes the file in place is caught just after opening it (truncated);
an atomic writer is caught with its complete temporary file not yet renamed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: relative path -> (sha256, mtime_ns)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def kill_while_writing(argv: list[str], target: Path | str, skip: int, log: Path,
                       env: dict[str, str] | None = None, timeout: float = 300.0) -> int:
    """Run ``progression <argv>``; SIGKILL it when it starts writing ``target`` (a path or a
    glob pattern, e.g. ``runs/*/checkpoints/last.ckpt``) for the ``skip + 1``-th time.
    Returns the exit status (``-SIGKILL`` when it was caught)."""
    marker = log.with_suffix(".paused")
    marker.unlink(missing_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE), str(target), str(skip), str(marker), *map(str, argv)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and not marker.exists():
                if time.monotonic() > deadline:
                    raise AssertionError(f"no write of {target} within {timeout} s")
                time.sleep(0.01)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return proc.returncode


def _watch(target: str, skip: int, marker: str) -> None:
    """Pause this process at the ``skip + 1``-th attempt to write ``target`` (a glob)."""
    import builtins
    import fnmatch
    import io

    seen = [0]

    def write_starts() -> None:
        seen[0] += 1
        if seen[0] > skip:
            Path(marker).write_text(str(os.getpid()))
            time.sleep(3600)  # until the test kills us

    def is_target(path: object) -> bool:
        return isinstance(path, str | bytes | os.PathLike) and fnmatch.fnmatchcase(
            os.path.abspath(os.fsdecode(path)), target)

    real_open, real_os_open = builtins.open, os.open
    real_replace, real_rename = os.replace, os.rename

    # A file opened in place is caught just after the open (truncated, not yet rewritten).
    def watched_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if is_target(file) and any(c in mode for c in "wax+"):
            write_starts()
        return handle

    def watched_os_open(path, flags, *args, **kwargs):
        fd = real_os_open(path, flags, *args, **kwargs)
        if is_target(path) and flags & (os.O_WRONLY | os.O_RDWR):
            write_starts()
        return fd

    def watched(real):
        def move(src, dst, *args, **kwargs):
            # Only a rename that will succeed publishes the file; one across file systems
            # fails (EXDEV) and the caller's fallback (a copy) is caught by open().
            if is_target(dst) and os.stat(src).st_dev == os.stat(os.path.dirname(os.path.abspath(
                    os.fsdecode(dst)))).st_dev:
                write_starts()
            return real(src, dst, *args, **kwargs)

        return move

    builtins.open = io.open = watched_open
    os.open = watched_os_open
    os.replace, os.rename = watched(real_replace), watched(real_rename)


if __name__ == "__main__":
    target_arg, skip_arg, marker_arg, *cli_args = sys.argv[1:]
    _watch(os.path.abspath(target_arg), int(skip_arg), marker_arg)
    from progression.cli import main

    sys.exit(main(cli_args))
