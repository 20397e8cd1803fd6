"""read_cohort / Cohort: parsed types, schema, fingerprint, subsets, DataFrames, errors."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from progression.cohort import Cohort, CohortSchema, read_cohort
from progression.errors import CohortError


def test_tables_are_parsed_to_the_documented_types(handmade_cohort):
    cohort = read_cohort(handmade_cohort)
    assert cohort.patient_ids == ["p1", "p2", "p3"]
    assert cohort.patients["birth_date"].dtype == "datetime64[ns]"
    assert pd.isna(cohort.patients.set_index("patient_id").at["p3", "birth_date"])
    visits = cohort.visits
    assert visits["visit_date"].dtype == "datetime64[ns]"
    assert visits["svdh_total"].dtype == np.float64
    # p2's second visit is unscored: NaN, not 0.
    p2 = visits[visits["patient_id"] == "p2"]
    assert p2["svdh_total"].isna().tolist() == [False, True]
    assert visits["crp"].dtype == np.float64
    assert len(cohort.images) == 12 and set(cohort.images["region"]) == {"hand_left", "hand_right"}
    assert all(os.path.isabs(p) and os.path.exists(p) for p in cohort.images["abs_path"])
    assert cohort.joint_scores is not None and len(cohort.joint_scores) == 3
    assert cohort.joint_scores["jsn"].isna().sum() == 1  # hand_left_ip has no JSN in SvdH


def test_patient_ids_that_look_like_numbers_stay_strings(copy_cohort, handmade_cohort):
    root = copy_cohort(handmade_cohort)
    for name in ("patients.csv", "visits.csv", "images.csv", "joint_scores.csv"):
        path = root / name
        path.write_text(path.read_text().replace("p1,", "007,"))
    cohort = read_cohort(root)
    assert "007" in cohort.patient_ids
    assert cohort.visits["patient_id"].map(type).eq(str).all()


def test_schema_splits_numeric_and_categorical_covariates(handmade_cohort):
    schema = read_cohort(handmade_cohort).schema
    assert schema.static_numeric == ("age",)
    assert schema.static_categorical == ("sex",)
    assert schema.visit_numeric == ("crp", "das28")
    assert schema.visit_categorical == ("treatment",)
    assert schema.levels == {"sex": ("F", "M"), "treatment": ("mtx", "tnfi")}
    assert CohortSchema.from_dict(schema.to_dict()) == schema


def test_total_is_filled_from_erosion_plus_jsn_when_only_components_are_given(
    copy_cohort, handmade_cohort
):
    root = copy_cohort(handmade_cohort)
    text = (root / "visits.csv").read_text().replace("p1,2019-01-15,10,6,4", "p1,2019-01-15,,6,4")
    (root / "visits.csv").write_text(text)
    visits = read_cohort(root).visits
    assert visits.loc[0, "svdh_total"] == 10.0


def test_fingerprint_is_stable_and_changes_with_data_or_image_mtime(copy_cohort, handmade_cohort):
    root = copy_cohort(handmade_cohort)
    first = read_cohort(root).fingerprint
    assert read_cohort(root).fingerprint == first
    image = root / "images" / "p1_0_hand_left.png"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    touched = read_cohort(root).fingerprint
    assert touched != first
    (root / "visits.csv").write_text((root / "visits.csv").read_text().replace("12.5", "12.6"))
    assert read_cohort(root).fingerprint not in (first, touched)


def test_subset_keeps_every_table_aligned_and_the_full_schema(handmade_cohort):
    cohort = read_cohort(handmade_cohort)
    sub = cohort.subset(["p3", "p1"])
    assert sub.patient_ids == ["p1", "p3"]
    for table in (sub.visits, sub.images, sub.joint_scores):
        assert set(table["patient_id"]) <= {"p1", "p3"}
    assert len(sub.visits) == 4 and len(sub.images) == 8
    assert sub.schema == cohort.schema
    assert sub.fingerprint != cohort.fingerprint
    with pytest.raises(CohortError, match="not in the cohort: p9"):
        cohort.subset(["p1", "p9"])


def test_from_frames_matches_reading_the_files(handmade_cohort):
    on_disk = read_cohort(handmade_cohort)
    images = pd.read_csv(handmade_cohort / "images.csv")
    images["path"] = [str(handmade_cohort / p) for p in images["path"]]  # absolute paths
    from_frames = Cohort.from_frames(
        patients=pd.read_csv(handmade_cohort / "patients.csv"),
        visits=pd.read_csv(handmade_cohort / "visits.csv", parse_dates=["visit_date"]),
        images=images,
        joint_scores=pd.read_csv(handmade_cohort / "joint_scores.csv"),
    )
    pd.testing.assert_frame_equal(from_frames.visits, on_disk.visits)
    pd.testing.assert_frame_equal(from_frames.patients, on_disk.patients)
    assert from_frames.images["abs_path"].tolist() == on_disk.images["abs_path"].tolist()
    assert from_frames.schema == on_disk.schema


def test_from_frames_reports_dataframe_rows(handmade_cohort):
    visits = pd.read_csv(handmade_cohort / "visits.csv")
    visits.loc[2, "svdh_total"] = 900
    with pytest.raises(CohortError) as exc:
        Cohort.from_frames(pd.read_csv(handmade_cohort / "patients.csv"), visits)
    assert "visits DataFrame row 2, column svdh_total: 900 is outside the SvdH range 0-448" in str(
        exc.value
    )


def test_cohort_error_lists_every_error_with_file_line_column_and_fix(copy_cohort, handmade_cohort):
    root = copy_cohort(handmade_cohort)
    text = (root / "visits.csv").read_text()
    text = text.replace("p1,2019-01-15,10,6,4,12.5", "p1,2019-01-15,10,6,4,abc")
    text = text.replace("p2,2019-03-01,3,1,2", "p2,2019-03-01,3,1,x")
    (root / "visits.csv").write_text(text)
    (root / "images.csv").write_text(
        (root / "images.csv")
        .read_text()
        .replace("p3,2019-06-10,hand_left", "p3,2019-06-10,hand_middle")
    )
    with pytest.raises(CohortError) as exc:
        read_cohort(root)
    message = str(exc.value)
    assert "3 error(s)" in message
    assert "visits.csv line 2, column crp: 'abc' is not a number" in message
    assert "visits.csv line 4, column svdh_jsn: 'x' is not a number" in message
    assert "images.csv line 10, column region: unknown region 'hand_middle'" in message
    assert message.count("fix:") == 3


def test_missing_directory_is_a_cohort_error(tmp_path):
    with pytest.raises(CohortError, match="cohort directory not found"):
        read_cohort(tmp_path / "nowhere")


def test_csv_quirks_are_read(copy_cohort, handmade_cohort):
    # A UTF-8 BOM (Excel), CRLF line ends, blank lines, padded cells and "NA" for missing.
    root = copy_cohort(handmade_cohort)
    lines = (root / "patients.csv").read_text().splitlines()
    lines[2] = " p2 , 1955-11-30 , M , NA "
    (root / "patients.csv").write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n\r\n").encode())
    cohort = read_cohort(root)
    assert cohort.patient_ids == ["p1", "p2", "p3"]
    assert np.isnan(cohort.patients.set_index("patient_id").at["p2", "age"])
