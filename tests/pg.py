"""A throw-away PostgreSQL server on 127.0.0.1 for tests (``postgres`` marker).

Use ``with postgres_server() as url:`` in a fixture (module scope: starting one takes seconds).

``initdb`` into a fresh temporary directory, ``pg_ctl start`` on a free loopback port with
trust authentication and fsync off, and ``pg_ctl stop -m immediate`` afterwards. PostgreSQL
refuses to run as root, so as root the cluster is owned and run by the ``postgres`` system
user (``runuser -u postgres --``). Binaries come from PATH (e.g. /usr/local/bin) or
/usr/lib/postgresql/*/bin; without them, or without a ``postgres`` user when running as
root, the tests that need it are skipped with the reason. A watchdog process
(:func:`cleanup_if_killed`, also used for the MLflow server test) stops the server if the
test process is killed before its teardown.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a PostgreSQL server; yield an SQLAlchemy URL to its ``postgres`` database."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found in PATH or /usr/lib/postgresql/*/bin")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        prefix = ["runuser", "-u", "postgres", "--"]
    # Not under pytest's tmp_path: its parents are private to root, and postgres must enter it.
    root = Path(tempfile.mkdtemp(prefix="progression-pg-"))
    data, logfile = root / "data", root / "server.log"
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(logfile), "-w", "-t", "60", "start")
    except subprocess.CalledProcessError as exc:
        log = logfile.read_text() if logfile.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr!r}\n{log}") from exc
    stop = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
    watchdog = cleanup_if_killed(stop, root)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        watchdog.kill()
        watchdog.wait()
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(stop, check=True, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def cleanup_if_killed(command: list[str], remove: Path | None = None) -> subprocess.Popen:
    """A watchdog that runs ``command`` (and deletes ``remove``) once this process is gone.

    If pytest is killed (a CI timeout), no teardown runs and a server started for a test
    would be left running; kill the returned process in the normal teardown.
    """
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(remove or ""), *command],
        start_new_session=True,
    )


_WATCHDOG = """
import os, shutil, subprocess, sys, time
parent, remove, command = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(1)
subprocess.run(command, capture_output=True, timeout=120)
if remove:
    shutil.rmtree(remove, ignore_errors=True)
"""
