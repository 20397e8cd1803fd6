"""Round trip: a simulated cohort (progression.simulate) validates clean and reads whole."""

from __future__ import annotations

import csv

import numpy as np

from progression.cohort import ImageCache, read_cohort, validate_cohort


def _rows(path) -> int:
    with open(path, newline="") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def test_simulated_cohort_validates_without_errors_or_warnings(tiny_cohort):
    report = validate_cohort(tiny_cohort, progress=False)
    assert report.problems == [], report.render()
    assert report.n_patients == 6 and report.n_images == _rows(tiny_cohort / "images.csv")


def test_simulated_cohort_reads_every_row_and_format(tiny_cohort):
    cohort = read_cohort(tiny_cohort)
    assert len(cohort.patients) == _rows(tiny_cohort / "patients.csv") == 6
    assert len(cohort.visits) == _rows(tiny_cohort / "visits.csv")
    assert len(cohort.images) == _rows(tiny_cohort / "images.csv")
    assert len(cohort.joint_scores) == _rows(tiny_cohort / "joint_scores.csv")
    suffixes = {p.rsplit(".", 1)[-1] for p in cohort.images["path"]}
    assert "dcm" in suffixes and len(suffixes) >= 2  # DICOM and at least one other format
    # Scored visits carry consistent totals; unscored ones are NaN, never 0.
    scored = cohort.visits.dropna(subset=["svdh_total", "svdh_erosion", "svdh_jsn"])
    np.testing.assert_allclose(
        scored["svdh_total"], scored["svdh_erosion"] + scored["svdh_jsn"], atol=1.5
    )
    assert cohort.visits["svdh_total"].isna().any()


def test_simulated_images_go_through_the_cache_once(tiny_cohort, tmp_path):
    paths = read_cohort(tiny_cohort).images["abs_path"].tolist()
    cache = ImageCache(tmp_path / "cache", 64)
    slots = cache.ensure(paths, progress=False, workers=1)
    images = cache.get(slots)
    assert images.shape == (len(paths), 64, 64) and (slots >= 0).all()
    assert images.mean() > 5  # not blank
    again = ImageCache(tmp_path / "cache", 64)
    again.ensure(paths, progress=False)
    assert again.decode_count == 0
