"""Atomic outputs: an interrupted write leaves the old file, and files get normal permissions."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from progression.io import atomic_open, atomic_write_csv, atomic_write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "predictions.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half a new fi")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


def test_completed_write_replaces_the_file(tmp_path):
    target = tmp_path / "sub" / "report.txt"
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_written_files_are_readable_by_others_like_a_plain_open(tmp_path):
    target = tmp_path / "table.csv"
    atomic_write_csv(target, pd.DataFrame({"patient_id": ["007"], "p_rapid": [0.3]}))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert pd.read_csv(target, dtype={"patient_id": str}).patient_id.tolist() == ["007"]


def test_json_safe_turns_nan_numpy_and_timestamps_into_plain_json():
    import json

    import numpy as np
    import pandas as pd

    from progression.io import json_safe

    value = {1: [np.float32(1.5), float("nan"), np.inf], "when": pd.Timestamp("2024-03-01"),
             "n": np.int64(3), "nested": ({"x": -np.inf},)}
    assert json_safe(value) == {"1": [1.5, None, None], "when": "2024-03-01", "n": 3,
                                "nested": [{"x": None}]}
    json.dumps(json_safe(value), allow_nan=False)
