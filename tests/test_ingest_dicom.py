"""import-dicom on a PACS-like tree of real DICOM files written with pydicom."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dicom_writer import write_dicom

from progression.cli import main
from progression.cohort import validate_cohort
from progression.ingest import guess_region, import_dicom, pseudonym

PIXELS = (np.arange(16 * 12, dtype=np.uint16).reshape(16, 12) * 20) % 4096


def _name(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))


def _write(root: Path, rng: random.Random, **elements) -> str:
    """One DICOM at a random depth under ``root`` with an opaque name; its path relative to root."""
    folder = root.joinpath(*[_name(rng) for _ in range(rng.randint(1, 3))])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _name(rng)
    write_dicom(path, PIXELS, **elements)
    return str(path.relative_to(root))


def build_pacs_tree(root: Path) -> tuple[dict[str, tuple], dict[str, str]]:
    """A PACS-like export. Returns (placed: rel path -> (patient, visit_date, region),
    unplaced: rel path -> expected reason prefix)."""
    rng = random.Random(7)
    placed: dict[str, tuple] = {}
    unplaced: dict[str, str] = {}
    base = {"PatientSex": "F", "PatientBirthDate": "19600102", "Modality": "CR"}
    # Patient A: visit 1 is two studies 3 days apart (hands, then feet); visit 2 a year later.
    study1 = dict(base, PatientID="RA-0001", StudyDate="20200310", StudyInstanceUID="1.2.3.1")
    study2 = dict(base, PatientID="RA-0001", StudyDate="20200313", StudyInstanceUID="1.2.3.2")
    study3 = dict(base, PatientID="RA-0001", StudyDate="20210312", StudyInstanceUID="1.2.3.3")
    a1 = ("RA-0001", "2020-03-10")
    placed[_write(root, rng, **study1, BodyPartExamined="HAND", ImageLaterality="L")] = (
        *a1,
        "hand_left",
    )
    placed[_write(root, rng, **study1, SeriesDescription="Hand PA rechts")] = (*a1, "hand_right")
    placed[_write(root, rng, **study2, SeriesDescription="LEFT FOOT")] = (*a1, "foot_left")
    placed[_write(root, rng, **study2, BodyPartExamined="FOOT", Laterality="R")] = (
        *a1,
        "foot_right",
    )
    kept = _write(root, rng, **study3, SeriesDescription="FOOT RIGHT")
    placed[kept] = ("RA-0001", "2021-03-12", "foot_right")
    # The same instance exported twice.
    uid = "1.2.826.0.1.3680043.2.1143.999"
    placed[_write(root, rng, **study3, BodyPartExamined="HAND", ImageLaterality="R",
                  SOPInstanceUID=uid)] = ("RA-0001", "2021-03-12", "hand_right")  # fmt: skip
    unplaced[_write(root, rng, **study3, BodyPartExamined="HAND", ImageLaterality="R",
                    SOPInstanceUID=uid)] = "duplicate SOPInstanceUID"  # fmt: skip
    # Patient B, one visit, with a scout, a secondary capture and an oblique view.
    b = dict(base, PatientID="RA-0002", PatientSex="M", StudyDate="20190105",
             StudyInstanceUID="1.2.4.1")  # fmt: skip
    placed[_write(root, rng, **b, BodyPartExamined="HAND", ImageLaterality="L",
                  ViewPosition="PA")] = ("RA-0002", "2019-01-05", "hand_left")  # fmt: skip
    unplaced[_write(root, rng, **b, BodyPartExamined="HAND", ImageLaterality="L",
                    SeriesDescription="Hand oblique")] = "second image"  # fmt: skip
    unplaced[_write(root, rng, **b, BodyPartExamined="HAND", SeriesDescription="Scout",
                    ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])] = "scout"  # fmt: skip
    unplaced[_write(root, rng, **b, BodyPartExamined="HAND", ImageLaterality="R",
                    ImageType=["DERIVED", "SECONDARY"])] = "secondary capture"  # fmt: skip
    unplaced[_write(root, rng, **dict(b, StudyDate=""), BodyPartExamined="FOOT",
                    ImageLaterality="L")] = "no StudyDate"  # fmt: skip
    unplaced[_write(root, rng, **b, BodyPartExamined="CHEST")] = "unknown body part"
    unplaced[_write(root, rng, **b, BodyPartExamined="FOOT")] = "unknown laterality"
    # Not DICOM: a report and a DICOM-named text file.
    (root / "README.TXT").write_text("export of 2021-04-01\n")
    unplaced["README.TXT"] = "not DICOM"
    (root / "IM000099.dcm").write_bytes(b"\0" * 300)
    unplaced["IM000099.dcm"] = "not DICOM"
    return placed, unplaced


@pytest.fixture
def pacs(tmp_path):
    root = tmp_path / "export"
    placed, unplaced = build_pacs_tree(root)
    return root, placed, unplaced


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in root.rglob("*") if p.is_file()
    }  # fmt: skip


def test_every_file_is_placed_as_built_or_listed_with_its_reason(pacs, tmp_path, capsys):
    root, placed, unplaced = pacs
    before = _snapshot(root)
    out = tmp_path / "cohort"
    assert main(["import-dicom", str(root), "--out", str(out), "--quiet"]) == 0
    assert _snapshot(root) == before  # SRC untouched
    summary = capsys.readouterr().out
    assert f"{len(placed)} images copied" in summary and "unplaced.csv" in summary

    images = pd.read_csv(out / "images.csv", dtype=str)
    got = {}
    source_by_bytes = {(root / rel).read_bytes(): rel for rel in placed}
    for row in images.itertuples(index=False):
        rel = source_by_bytes[(out / row.path).read_bytes()]
        got[rel] = (row.patient_id, row.visit_date, row.region)
    assert got == placed
    listed = pd.read_csv(out / "unplaced.csv", dtype=str)
    assert sorted(listed["file"]) == sorted(unplaced)
    for row in listed.itertuples(index=False):
        assert row.reason.startswith(unplaced[row.file]), row

    visits = pd.read_csv(out / "visits.csv", dtype=str, keep_default_na=False)
    assert visits[["patient_id", "visit_date"]].values.tolist() == [
        ["RA-0001", "2020-03-10"], ["RA-0001", "2021-03-12"], ["RA-0002", "2019-01-05"]
    ]  # fmt: skip
    assert (visits["svdh_total"] == "").all()
    patients = pd.read_csv(out / "patients.csv", dtype=str)
    assert patients.values.tolist() == [["RA-0001", "F", "1960-01-02"],
                                        ["RA-0002", "M", "1960-01-02"]]  # fmt: skip
    report = validate_cohort(out, progress=False, workers=1)
    assert report.ok, report.render()


def test_window_zero_keeps_studies_days_apart_as_separate_visits(pacs, tmp_path):
    root, _, _ = pacs
    out = tmp_path / "cohort"
    result = import_dicom(root, out, visit_window_days=0, progress=False)
    visits = pd.read_csv(out / "visits.csv", dtype=str)
    assert ["RA-0001", "2020-03-13"] in visits[["patient_id", "visit_date"]].values.tolist()
    assert result.n_merged_studies == 0 and result.n_visits == 4


def test_pseudonymized_import_holds_no_original_id_and_key_table_only_where_asked(pacs, tmp_path):
    root, placed, _ = pacs
    out, keys = tmp_path / "cohort", tmp_path / "secret" / "keys.csv"
    assert main(["import-dicom", str(root), "--out", str(out), "--quiet",
                 "--pseudonymize", "s3cret"]) == 0  # fmt: skip
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"RA-0001" not in data and b"RA-0002" not in data, path
    ids = set(pd.read_csv(out / "patients.csv", dtype=str)["patient_id"])
    assert ids == {pseudonym("RA-0001", "s3cret"), pseudonym("RA-0002", "s3cret")}
    assert validate_cohort(out, progress=False, workers=1).ok

    out2 = tmp_path / "cohort2"
    assert main(["import-dicom", str(root), "--out", str(out2), "--quiet",
                 "--pseudonymize", "s3cret", "--key-table", str(keys)]) == 0  # fmt: skip
    table = pd.read_csv(keys, dtype=str)
    assert dict(zip(table["pseudonym"], table["patient_id"], strict=True)) == {
        pseudonym("RA-0001", "s3cret"): "RA-0001", pseudonym("RA-0002", "s3cret"): "RA-0002"
    }  # fmt: skip


def test_link_mode_writes_symlinks_to_the_source_files(pacs, tmp_path):
    root, placed, _ = pacs
    out = tmp_path / "cohort"
    import_dicom(root, out, mode="link", progress=False)
    images = pd.read_csv(out / "images.csv", dtype=str)
    targets = {os.path.relpath(os.readlink(out / p), root) for p in images["path"]}
    assert targets == set(placed)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--out", "{out_full}"], "is not empty; choose a new directory or add --overwrite"),
        (["--out", "{src}/inner"], "overlap"),
        (["--out", "{out}", "--link", "--pseudonymize", "x"], "use --copy"),
        (["--out", "{out}", "--key-table", "{tmp}/k.csv"], "--key-table needs --pseudonymize"),
        (["--out", "{out}", "--visit-window-days", "-1"], "must be 0 or more"),
    ],
)
def test_bad_command_lines_exit_2_with_the_fix_and_write_nothing(pacs, tmp_path, capsys, argv,
                                                                 message):  # fmt: skip
    root, _, _ = pacs
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    fill = {"out_full": str(full), "src": str(root), "out": str(tmp_path / "new"),
            "tmp": str(tmp_path)}  # fmt: skip
    before = _snapshot(tmp_path)
    assert main(["import-dicom", str(root), "--quiet", *[a.format(**fill) for a in argv]]) == 2
    assert message in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_overwrite_replaces_a_previous_import(pacs, tmp_path):
    root, placed, _ = pacs
    out = tmp_path / "cohort"
    import_dicom(root, out, progress=False)
    shutil.rmtree(root / sorted(p.name for p in root.iterdir() if p.is_dir())[0])
    result = import_dicom(root, out, progress=False, overwrite=True)
    assert len(pd.read_csv(out / "images.csv")) == result.n_images
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cohort")]


@pytest.mark.parametrize(
    ("header", "region"),
    [
        ({"BodyPartExamined": "HAND", "ImageLaterality": "R"}, "hand_right"),
        ({"BodyPartExamined": "FOOT", "Laterality": "L"}, "foot_left"),
        ({"SeriesDescription": "LEFT HAND"}, "hand_left"),
        ({"SeriesDescription": "FOOT RIGHT"}, "foot_right"),
        ({"SeriesDescription": "Hand PA li"}, "hand_left"),
        ({"StudyDescription": "Vorfuss links dp"}, "foot_left"),
        ({"BodyPartExamined": "HAND", "SeriesDescription": "BOTH HANDS"}, None),
        ({"BodyPartExamined": "HAND", "ImageLaterality": "B"}, None),
        ({"SeriesDescription": "2D hand L and foot L"}, None),
    ],
)
def test_region_is_read_from_coded_tags_then_description_words(header, region):
    assert guess_region(header).region == region


def test_export_with_dicomdir_lists_the_index_and_places_the_images(tmp_path):
    from pydicom.fileset import FileSet

    staging, export = tmp_path / "staging", tmp_path / "export"
    staging.mkdir()
    fileset = FileSet()
    for i, side in enumerate(("L", "R")):
        path = write_dicom(
            staging / f"{i}.dcm", PIXELS, PatientID="RA-0003", PatientName="X^Y",
            StudyDate="20220101", StudyTime="120000", StudyID="1", StudyInstanceUID="1.2.5.1",
            SeriesInstanceUID=f"1.2.5.1.{i}", SeriesNumber=i + 1, InstanceNumber=1,
            BodyPartExamined="FOOT", ImageLaterality=side,
        )  # fmt: skip
        fileset.add(path)
    fileset.write(export)  # DICOMDIR + PT000000/ST000000/SE00000x/IM000000
    out = tmp_path / "cohort"
    result = import_dicom(export, out, progress=False)
    assert result.n_images == 2
    assert result.unplaced.values.tolist() == [["DICOMDIR", "DICOMDIR: the export's index, not "
                                                "an image"]]  # fmt: skip
    assert validate_cohort(out, progress=False, workers=1).ok
