"""validate_cohort / `progression validate`: every planted problem is named (file, line,
column), errors exit 1, warnings exit 0, and the cohort is never modified."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from progression import cli
from progression.cohort import validate_cohort


# ------------------------------------------------------------------ editing a copied cohort
def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def _write(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def set_cell(file: str, line: int, column: str, value: str) -> Callable[[Path], None]:
    """Set one cell (``line`` as in the file, header = 1); adds the column if absent."""

    def edit(root: Path) -> None:
        rows = _rows(root / file)
        if column not in rows[0]:
            for row in rows:
                row.append("")
            rows[0][-1] = column
        rows[line - 1][rows[0].index(column)] = value
        _write(root / file, rows)

    return edit


def copy_line(file: str, line: int) -> Callable[[Path], None]:
    """Append an identical copy of ``line`` at the end of ``file``."""

    def edit(root: Path) -> None:
        rows = _rows(root / file)
        _write(root / file, [*rows, list(rows[line - 1])])

    return edit


def append(file: str, values: dict[str, str]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        rows = _rows(root / file)
        _write(root / file, [*rows, [values.get(c, "") for c in rows[0]]])

    return edit


def drop_column(file: str, column: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        rows = _rows(root / file)
        k = rows[0].index(column)
        _write(root / file, [row[:k] + row[k + 1 :] for row in rows])

    return edit


def all_of(*edits: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        for one in edits:
            one(root)

    return edit


def replace_image(name: str, make: Callable[[Path, bytes], bytes | None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / "images" / name
        content = make(path, path.read_bytes())
        if content is not None:
            path.write_bytes(content)

    return edit


def _header_only_dicom(path: Path, _: bytes) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID = "p2"
    ds.save_as(path, enforce_file_format=True)


def _zero_spacing_dicom(path: Path, _: bytes) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    ds.ImagerPixelSpacing = [0.0, 0.0]
    ds.save_as(path)


def _complete_joint_scores_summing_to_0(root: Path) -> None:
    """Every SvdH joint of p1's first visit graded 0, while visits.csv says total 10."""
    from progression.scoring import JOINTS

    rows = [["patient_id", "visit_date", "joint", "erosion", "jsn"]]
    for joint in JOINTS:
        grades = ["0" if m is not None else "" for m in (joint.erosion_max, joint.jsn_max)]
        rows.append(["p1", "2019-01-15", joint.name, *grades])
    _write(root / "joint_scores.csv", rows)


def _mostly_numeric_bmi(root: Path) -> None:
    """A bmi column with ten numbers and one text cell (patients.csv line 2)."""
    set_cell("patients.csv", 2, "bmi", "n.d.")(root)
    for k in range(10):
        append("patients.csv", {"patient_id": f"q{k}", "bmi": str(20 + k)})(root)
        append("visits.csv", {"patient_id": f"q{k}", "visit_date": "2020-01-01"})(root)


def _empty_cohort(root: Path) -> None:
    for name in ("patients.csv", "visits.csv", "images.csv", "joint_scores.csv"):
        _write(root / name, _rows(root / name)[:1])


def _no_images_for_p3(root: Path) -> None:
    rows = _rows(root / "images.csv")
    _write(root / "images.csv", [r for r in rows if r[0] != "p3"])


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime (ns) of every file under ``root``."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_validate(root: Path, tmp_path: Path) -> tuple[int, dict]:
    """`progression validate ROOT --json FILE --quiet` in-process; (exit code, JSON report)."""
    out = tmp_path / "report.json"
    code = cli.main(["validate", str(root), "--json", str(out), "--quiet"])
    return code, json.loads(out.read_text())


# (what, edit, file, line, column, text in the message); one case per line, unformatted.
# fmt: off
ERRORS = [
    ("missing file", lambda r: (r / "images.csv").unlink(), "images.csv", None, None, "required file is missing"),
    ("missing column", drop_column("visits.csv", "visit_date"), "visits.csv", None, "visit_date", "required column visit_date is missing"),
    ("unparsable date", set_cell("visits.csv", 3, "visit_date", "20/01/2020"), "visits.csv", 3, "visit_date", "'20/01/2020' is not a date in YYYY-MM-DD form"),
    ("impossible date", set_cell("patients.csv", 3, "birth_date", "1955-02-30"), "patients.csv", 3, "birth_date", "not a calendar date"),
    ("future date", set_cell("visits.csv", 7, "visit_date", "2999-01-01"), "visits.csv", 7, "visit_date", "2999-01-01 is in the future"),
    ("visit before birth", set_cell("visits.csv", 2, "visit_date", "1950-01-01"), "visits.csv", 2, "visit_date", "before the patient's birth_date 1960-05-01"),
    ("two images of one region", append("images.csv", {"patient_id": "p1", "visit_date": "2019-01-15", "region": "hand_left", "path": "images/p1_1_hand_left.png"}), "images.csv", 14, None, "p1 / 2019-01-15 / hand_left also on line 2"),
    ("two visits on one date", append("visits.csv", {"patient_id": "p1", "visit_date": "2019-01-15", "svdh_total": "11"}), "visits.csv", 8, None, "p1 / 2019-01-15 also on line 2"),
    ("duplicate patients row", copy_line("patients.csv", 2), "patients.csv", 5, None, "duplicate row: identical to line 2"),
    ("duplicate visits row", copy_line("visits.csv", 2), "visits.csv", 8, None, "duplicate row: identical to line 2"),
    ("duplicate images row", copy_line("images.csv", 2), "images.csv", 14, None, "duplicate row: identical to line 2"),
    ("duplicate joint row", copy_line("joint_scores.csv", 2), "joint_scores.csv", 5, None, "duplicate row: identical to line 2"),
    ("image missing", set_cell("images.csv", 2, "path", "images/nothere.png"), "images.csv", 2, "path", "image file images/nothere.png not found"),
    ("image corrupt", replace_image("p1_0_hand_right.png", lambda p, b: b[: len(b) // 2]), "images.csv", 3, "path", "p1_0_hand_right.png: cannot decode the image"),
    ("image zero bytes", replace_image("p1_1_hand_left.png", lambda p, b: b""), "images.csv", 4, "path", "images/p1_1_hand_left.png is empty (0 bytes)"),
    ("image random bytes", replace_image("p3_0_hand_left.tif", lambda p, b: os.urandom(300)), "images.csv", 10, "path", "p3_0_hand_left.tif: not a readable TIF image"),
    ("DICOM without pixels", replace_image("p2_0_hand_left.dcm", _header_only_dicom), "images.csv", 6, "path", "DICOM without pixel data"),
    ("path traversal", set_cell("images.csv", 2, "path", "../../etc/passwd"), "images.csv", 2, "path", "'../../etc/passwd' points outside the cohort directory"),
    ("windows traversal", set_cell("images.csv", 2, "path", "images\\..\\..\\x.png"), "images.csv", 2, "path", "points outside the cohort directory"),
    ("absolute path", set_cell("images.csv", 2, "path", "/etc/passwd"), "images.csv", 2, "path", "'/etc/passwd' is an absolute path"),
    ("unknown region", set_cell("images.csv", 10, "region", "hand_middle"), "images.csv", 10, "region", "unknown region 'hand_middle'"),
    ("unsupported extension", set_cell("images.csv", 2, "path", "images/scan.bmp"), "images.csv", 2, "path", "unsupported file type '.bmp'"),
    ("patient only in visits", append("visits.csv", {"patient_id": "p9", "visit_date": "2019-01-01"}), "visits.csv", 8, "patient_id", "patient p9 (lines 8) is not in patients.csv"),
    ("patient without visits", append("patients.csv", {"patient_id": "p4"}), "patients.csv", 5, "patient_id", "patient p4 has no visits"),
    ("image without visit", set_cell("images.csv", 2, "visit_date", "2019-01-16"), "images.csv", 2, "visit_date", "no visit of patient p1 on 2019-01-16"),
    ("joint score without visit", set_cell("joint_scores.csv", 2, "visit_date", "2019-01-16"), "joint_scores.csv", 2, "visit_date", "no visit of patient p1 on 2019-01-16"),
    ("erosion out of range", set_cell("visits.csv", 2, "svdh_erosion", "281"), "visits.csv", 2, "svdh_erosion", "281 is outside the SvdH range 0-280"),
    ("jsn out of range", set_cell("visits.csv", 2, "svdh_jsn", "-1"), "visits.csv", 2, "svdh_jsn", "-1 is outside the SvdH range 0-168"),
    ("total out of range", set_cell("visits.csv", 2, "svdh_total", "449"), "visits.csv", 2, "svdh_total", "449 is outside the SvdH range 0-448"),
    ("total is not the sum", set_cell("visits.csv", 2, "svdh_total", "12"), "visits.csv", 2, "svdh_total", "svdh_total 12 differs from svdh_erosion + svdh_jsn = 10"),
    ("joint grade out of range", set_cell("joint_scores.csv", 2, "erosion", "6"), "joint_scores.csv", 2, "erosion", "6 is not an SvdH erosion grade for hand_left_mcp2 (0-5)"),
    ("joint grade not integer", set_cell("joint_scores.csv", 2, "jsn", "1.5"), "joint_scores.csv", 2, "jsn", "1.5 is not an SvdH jsn grade"),
    ("unknown joint", set_cell("joint_scores.csv", 3, "joint", "hand_left_mcp9"), "joint_scores.csv", 3, "joint", "unknown joint 'hand_left_mcp9'"),
    ("component not in SvdH", set_cell("joint_scores.csv", 3, "jsn", "1"), "joint_scores.csv", 3, "jsn", "joint hand_left_ip has no jsn component"),
    ("inf in covariate", set_cell("visits.csv", 2, "crp", "inf"), "visits.csv", 2, "crp", "'inf' is infinite"),
    ("text in score column", set_cell("visits.csv", 2, "svdh_total", "ten"), "visits.csv", 2, "svdh_total", "'ten' is not a number in numeric column svdh_total"),
    ("text in known numeric covariate", set_cell("visits.csv", 3, "crp", "<5"), "visits.csv", 3, "crp", "'<5' is not a number"),
    ("ragged row", lambda r: (r / "visits.csv").write_text((r / "visits.csv").read_text() + "p1,2019-05-05\n"), "visits.csv", 8, None, "row has 2 fields but the header has 8"),
    ("semicolon CSV", lambda r: (r / "patients.csv").write_text("patient_id;sex\np1;F\n"), "patients.csv", 1, None, "separated by ';'"),
    ("not UTF-8", lambda r: (r / "patients.csv").write_bytes(b"patient_id,sex\np1,\xe9\n"), "patients.csv", 2, None, "not UTF-8 text"),
    ("empty cohort", _empty_cohort, "patients.csv", None, None, "cohort is empty: no patients"),
]

WARNINGS = [
    ("patient without images", _no_images_for_p3, "patients.csv", 4, "patient_id", "patient p3 has no images"),
    ("score falls", all_of(*(set_cell("visits.csv", 3, c, "2") for c in ("svdh_total", "svdh_erosion")), set_cell("visits.csv", 3, "svdh_jsn", "0")), "visits.csv", 3, "svdh_total", "falls from 10 (2019-01-15) to 2 (2020-01-20)"),
    ("crp implausible", set_cell("visits.csv", 2, "crp", "500"), "visits.csv", 2, "crp", "crp 500 is outside the plausible range 0-300 mg/L"),
    ("esr implausible", set_cell("visits.csv", 2, "esr", "200"), "visits.csv", 2, "esr", "esr 200 is outside the plausible range 0-150 mm/h"),
    ("das28 implausible", set_cell("visits.csv", 2, "das28", "12"), "visits.csv", 2, "das28", "das28 12 is outside the plausible range 0-10"),
    ("sjc28 implausible", set_cell("visits.csv", 2, "sjc28", "30"), "visits.csv", 2, "sjc28", "sjc28 30 is outside the plausible range 0-28"),
    ("tjc28 implausible", set_cell("visits.csv", 2, "tjc28", "-1"), "visits.csv", 2, "tjc28", "tjc28 -1 is outside the plausible range 0-28"),
    ("haq implausible", set_cell("visits.csv", 2, "haq", "3.5"), "visits.csv", 2, "haq", "haq 3.5 is outside the plausible range 0-3"),
    ("zero pixel spacing", replace_image("p2_0_hand_right.dcm", _zero_spacing_dicom), "images.csv", 7, "path", "ImagerPixelSpacing is 0/0"),
    ("score column typo", lambda r: (r / "visits.csv").write_text((r / "visits.csv").read_text().replace("svdh_total", "svdh_totl", 1)), "visits.csv", None, "svdh_totl", "did you mean svdh_total?"),
    ("joint sum differs from total", _complete_joint_scores_summing_to_0, "visits.csv", 2, "svdh_total", "svdh_total 10 differs from the sum of joint_scores.csv (0)"),
    ("mostly numeric column", _mostly_numeric_bmi, "patients.csv", 2, "bmi", "numeric except 1 cell(s) (lines 2, e.g. 'n.d.')"),
]
# fmt: on


def _find(report: dict, severity, file, line, column, text) -> list[dict]:
    return [
        p
        for p in report["problems"]
        if p["severity"] == severity
        and p["file"] == file
        and p["row"] == line
        and (column is None or p["column"] == column)
        and (text is None or text in p["message"])
    ]


def test_a_valid_cohort_passes_and_exits_0(handmade_cohort, tmp_path, capsys):
    before = snapshot(handmade_cohort)
    code = cli.main(["validate", str(handmade_cohort)])
    out = capsys.readouterr().out
    assert code == 0
    assert "3 patients, 6 visits, 12 images" in out and "OK: 0 errors, 0 warnings" in out
    assert snapshot(handmade_cohort) == before


CASES = [("error", *case) for case in ERRORS] + [("warning", *case) for case in WARNINGS]


@pytest.mark.parametrize(
    ("severity", "what", "edit", "file", "line", "column", "text"),
    CASES,
    ids=[f"{c[0]}: {c[1]}" for c in CASES],
)
def test_planted_problem_is_named_and_sets_the_exit_code(
    handmade_cohort, copy_cohort, tmp_path, severity, what, edit, file, line, column, text
):
    root = copy_cohort(handmade_cohort)
    edit(root)
    before = snapshot(root)
    code, report = run_validate(root, tmp_path)
    # errors exit 1; a cohort with warnings only is usable and exits 0
    assert code == (1 if severity == "error" else 0), report["problems"]
    found = _find(report, severity, file, line, column, text)
    assert found, json.dumps(report["problems"], indent=1)
    assert all(p["fix"] for p in report["problems"])
    assert snapshot(root) == before  # byte-identical, mtimes unchanged


def test_nan_in_a_numeric_covariate_is_missing_not_an_error(handmade_cohort, copy_cohort, tmp_path):
    root = copy_cohort(handmade_cohort)
    set_cell("visits.csv", 2, "crp", "NaN")(root)
    code, report = run_validate(root, tmp_path)
    assert code == 0 and report["problems"] == []


def test_one_report_lists_every_problem_of_a_badly_broken_cohort(
    handmade_cohort, copy_cohort, tmp_path
):
    root = copy_cohort(handmade_cohort)
    for edit in (
        set_cell("visits.csv", 3, "visit_date", "2020-13-01"),
        set_cell("visits.csv", 4, "svdh_total", "ten"),
        set_cell("images.csv", 2, "path", "../../etc/passwd"),
        set_cell("images.csv", 10, "region", "knee"),
        replace_image("p1_1_hand_left.png", lambda p, b: b""),
        set_cell("joint_scores.csv", 3, "joint", "hand_left_mcp9"),
        copy_line("patients.csv", 3),
        set_cell("visits.csv", 2, "crp", "500"),
    ):
        edit(root)
    report = validate_cohort(root, progress=False)
    located = {(p.file, p.row, p.severity) for p in report.problems}
    assert {
        ("visits.csv", 3, "error"),
        ("visits.csv", 4, "error"),
        ("images.csv", 2, "error"),
        ("images.csv", 10, "error"),
        ("images.csv", 4, "error"),
        ("joint_scores.csv", 3, "error"),
        ("patients.csv", 5, "error"),
        ("visits.csv", 2, "warning"),
    } <= located
    text = report.render()
    # one block per file, the verdict last
    assert text.count("\nvisits.csv: 2 errors, 1 warnings") == 1
    assert text.splitlines()[-1].startswith(f"FAILED: {len(report.errors)} errors")


_OPENED: list[str] | None = None  # file paths opened while a test records them


def _record_opens(event: str, args: tuple) -> None:
    # Audit hooks cannot be removed, so the hook records only while _OPENED is a list.
    if (
        _OPENED is not None
        and event == "open"
        and args
        and isinstance(args[0], str | bytes | os.PathLike)
    ):
        _OPENED.append(os.fsdecode(args[0]))


_HOOK_INSTALLED: list[bool] = []


def _validate_recording_opens(root: Path):
    """validate_cohort(root) in this process, and the paths of every file it opened."""
    global _OPENED
    if not _HOOK_INSTALLED:
        sys.addaudithook(_record_opens)
        _HOOK_INSTALLED.append(True)
    _OPENED = opened = []
    try:
        report = validate_cohort(root, progress=False, workers=1)
    finally:
        _OPENED = None
    return report, opened


def test_path_outside_the_cohort_is_never_opened(handmade_cohort, copy_cohort, tmp_path):
    root = copy_cohort(handmade_cohort)
    secret = tmp_path / "secret.png"
    secret.write_bytes((root / "images" / "p1_0_hand_left.png").read_bytes())  # a valid image
    set_cell("images.csv", 2, "path", "../secret.png")(root)
    report, opened = _validate_recording_opens(root)
    assert any("points outside the cohort directory" in p.message for p in report.errors)
    assert any(path.endswith("p1_0_hand_right.png") for path in opened)  # the hook works
    assert not any("secret" in path for path in opened)


def _link_to_a_film_outside(root: Path, outside: Path) -> None:
    """images.csv line 2 names images/linked.png, a symbolic link to a valid film in ``outside``."""
    outside.mkdir()
    (outside / "store.png").write_bytes((root / "images" / "p1_0_hand_left.png").read_bytes())
    (root / "images" / "linked.png").symlink_to(outside / "store.png")
    set_cell("images.csv", 2, "path", "images/linked.png")(root)


def test_a_symlink_leaving_the_cohort_is_an_error_naming_the_row_and_the_opt_in(
        handmade_cohort, copy_cohort, tmp_path):
    root = copy_cohort(handmade_cohort)
    _link_to_a_film_outside(root, tmp_path / "store")
    report, opened = _validate_recording_opens(root)
    [problem] = [p for p in report.errors if p.column == "path"]
    assert (problem.file, problem.row) == ("images.csv", 2)
    assert "'images/linked.png' is or passes through a symbolic link that leaves the cohort" in (
        problem.message)
    assert "allow_external_images: true" in problem.fix and "cohort.yaml" in problem.fix
    assert not any("store" in path for path in opened)  # the film outside is never read
    from progression.cohort import read_cohort
    from progression.errors import CohortError

    with pytest.raises(CohortError, match="images.csv line 2, column path"):
        read_cohort(root)


def test_a_linked_directory_leaving_the_cohort_is_refused_too(
        handmade_cohort, copy_cohort, tmp_path):
    root = copy_cohort(handmade_cohort)
    store = tmp_path / "store"
    (root / "images").rename(store)
    (root / "images").symlink_to(store, target_is_directory=True)
    report = validate_cohort(root, progress=False, workers=1)
    n_rows = len((root / "images.csv").read_text().splitlines()) - 1
    assert len([p for p in report.errors if "symbolic link" in p.message]) == n_rows


def test_a_cohort_opts_in_to_links_leaving_it_in_cohort_yaml(handmade_cohort, copy_cohort,
                                                            tmp_path):
    root = copy_cohort(handmade_cohort)
    _link_to_a_film_outside(root, tmp_path / "store")
    (root / "cohort.yaml").write_text("allow_external_images: true\n")
    report = validate_cohort(root, progress=False, workers=1)
    assert report.ok, report.render()
    from progression.cohort import read_cohort

    cohort = read_cohort(root)
    assert "images/linked.png" in cohort.images["path"].tolist()
    # the opt-in is for links only: a path written to leave the cohort is still refused
    set_cell("images.csv", 3, "path", "../store/store.png")(root)
    messages = [p.message for p in validate_cohort(root, progress=False).errors]
    assert messages == ["'../store/store.png' points outside the cohort directory"]


def test_an_unknown_cohort_option_names_the_known_ones(handmade_cohort, copy_cohort):
    root = copy_cohort(handmade_cohort)
    (root / "cohort.yaml").write_text("allow_external_image: yes\n")
    [problem] = validate_cohort(root, progress=False).errors
    assert (problem.file, problem.column) == ("cohort.yaml", "allow_external_image")
    assert "use one of allow_external_images" in problem.fix


def test_images_are_checked_in_worker_processes_with_the_same_result(handmade_cohort, copy_cohort):
    root = copy_cohort(handmade_cohort)
    replace_image("p1_1_hand_left.png", lambda p, b: b[:40])(root)
    serial = validate_cohort(root, progress=False, workers=1)
    parallel = validate_cohort(root, progress=False, workers=2)
    assert serial.problems == parallel.problems and len(serial.errors) == 1


def test_json_report_inside_the_cohort_is_refused(handmade_cohort, capsys):
    code = cli.main(["validate", str(handmade_cohort), "--json", str(handmade_cohort / "r.json")])
    assert code == 2
    assert "inside the cohort directory" in capsys.readouterr().err
    assert not (handmade_cohort / "r.json").exists()


def test_human_report_names_file_line_and_fix(handmade_cohort, copy_cohort, capsys):
    root = copy_cohort(handmade_cohort)
    set_cell("visits.csv", 3, "visit_date", "2020-1-20")(root)
    assert cli.main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    assert "visits.csv: " in out
    assert "error   line 3 [visit_date]: '2020-1-20' is not a date in YYYY-MM-DD form" in out
    assert "fix: write the date as YYYY-MM-DD" in out


def test_a_cohort_whose_films_are_all_missing_gets_one_message_naming_the_likely_cause(
        tmp_path, capsys):
    from progression.simulate import SimulationConfig, simulate_cohort

    root = simulate_cohort(tmp_path / "tables_only", SimulationConfig(
        n_patients=3, seed=0, render_images=False, oracle_draws=16), progress=False)
    assert cli.main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    n_listed = len((root / "images.csv").read_text().splitlines()) - 1
    assert f"error   file [path]: none of the {n_listed} image files listed exists under {root}" in out
    assert "simulated with --no-images has tables only" in out
    # train and predict read the cohort the same way: the cause comes before the rows
    from progression.cohort import read_cohort
    from progression.errors import CohortError

    with pytest.raises(CohortError) as raised:
        read_cohort(root)
    assert str(raised.value).splitlines()[1].startswith(
        f"error: images.csv, column path: none of the {n_listed} image files")


def test_one_missing_film_among_others_is_reported_alone(handmade_cohort, copy_cohort):
    root = copy_cohort(handmade_cohort)
    set_cell("images.csv", 2, "path", "images/nothere.png")(root)
    messages = [p.message for p in validate_cohort(root).errors]
    assert messages == ["image file images/nothere.png not found"]
