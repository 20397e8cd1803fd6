"""Property tests: whatever the CSV files hold, reading raises only CohortError and
validation never raises; the two always agree on whether the tables are usable."""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from progression.cohort import read_cohort, validate_cohort
from progression.errors import CohortError

TABLES = ["patients.csv", "visits.csv", "images.csv", "joint_scores.csv"]
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

cells = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "NA",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "-0",
            "p1",
            "p2",
            "2019-01-15",
            "2020-02-30",
            "hand_left",
            "../x.png",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**6), 10**6).map(str),
    st.dates().map(lambda d: d.isoformat()),
)


@pytest.fixture(scope="module")
def fuzz_root(handmade_cohort):
    """One private copy reused across examples; each example rewrites one table."""
    root = Path(tempfile.mkdtemp()) / "cohort"
    shutil.copytree(handmade_cohort, root)
    originals = {name: (root / name).read_bytes() for name in TABLES}
    yield root, originals
    shutil.rmtree(root.parent)


def _read_and_validate(root: Path) -> None:
    """validate never raises; read_cohort raises only CohortError, exactly when validate
    reports an error (the image files stay valid here, so every error is a table's)."""
    report = validate_cohort(root, progress=False, workers=1)
    try:
        read_cohort(root)
    except CohortError as exc:
        assert not report.ok, "read_cohort failed but validate found no error"
        assert "fix:" in str(exc)
    else:
        assert report.ok, [p.render() for p in report.errors]


@FUZZ
@given(table=st.sampled_from(TABLES), data=st.binary(max_size=400))
def test_random_bytes_in_any_table_never_crash(fuzz_root, table, data):
    root, originals = fuzz_root
    try:
        (root / table).write_bytes(data)
        _read_and_validate(root)
    finally:
        (root / table).write_bytes(originals[table])


@FUZZ
@given(
    table=st.sampled_from(TABLES),
    rows=st.lists(st.lists(cells, min_size=1, max_size=9), max_size=6),
    keep_header=st.booleans(),
)
def test_random_cell_values_never_crash(fuzz_root, table, rows, keep_header):
    root, originals = fuzz_root
    header = originals[table].decode().splitlines()[0].split(",")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header if keep_header else [c[:4] for c in header])
    for row in rows:  # rows of the right width mostly, ragged sometimes
        writer.writerow((row * len(header))[: len(header)] if len(row) > 2 else row)
    try:
        (root / table).write_text(buffer.getvalue(), encoding="utf-8", errors="surrogatepass")
        _read_and_validate(root)
    finally:
        (root / table).write_bytes(originals[table])
