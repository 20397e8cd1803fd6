"""The README's "From Python" block runs as written, in a fresh directory and interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_block_runs_as_written(tmp_path):
    block = re.search(r"## From Python.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README.md lost its 'From Python' section"
    done = subprocess.run([sys.executable, "-c", block.group(1)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "delta_svdh_pred" in done.stdout and "'ci_lo'" in done.stdout
    assert (tmp_path / "report" / "metrics.json").is_file()
    assert (tmp_path / "mlruns.db").is_file()
