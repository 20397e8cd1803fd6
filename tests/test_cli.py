"""The CLI: every command is listed, and a user-fixable error is one line, not a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from progression import cli


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("simulate", "validate", "train", "predict", "demo"):
        assert name in out


def test_config_error_is_a_message_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  no_such_key: 1\n")
    data = tmp_path / "cohort"
    data.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "progression.cli", "train", "--data", str(data), "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "train.no_such_key" in proc.stderr
