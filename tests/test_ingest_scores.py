"""import-scores: long and wide sheets (CSV and xlsx), joint maps, every bad input."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from progression.cli import main
from progression.cohort import read_cohort, validate_cohort
from progression.ingest import load_joint_map
from progression.scoring import JOINTS

PATIENT, VISIT = "p2", "2020-02-28"  # the handmade cohort's unscored visit
PREFIX = {"hand_left": "LH", "hand_right": "RH", "foot_left": "LF", "foot_right": "RF"}
# The other centre's names: thumb IP 'ip1', 'capitate' for capitate-scaphoid-lunate,
# narrowing recorded on 'radius' (radiocarpal) and 'trapezium' (scaphoid-trapezium).
OTHER_CENTRE = {("ip", "erosion"): "ip1", ("csl", "jsn"): "capitate",
                ("radiocarpal", "jsn"): "radius", ("stt", "jsn"): "trapezium"}  # fmt: skip


def _grades(seed: int = 0) -> dict[tuple[str, str], int]:
    """A grade for every SvdH joint and component: (joint name, component) -> grade."""
    rng = np.random.default_rng(seed)
    grades = {}
    for joint in JOINTS:
        for component, cap in (("erosion", joint.erosion_max), ("jsn", joint.jsn_max)):
            if cap is not None:
                grades[(joint.name, component)] = int(rng.integers(0, cap + 1))
    return grades


def _their_name(joint_name: str, component: str) -> str:
    joint = next(j for j in JOINTS if j.name == joint_name)
    site = joint.site
    if joint.is_hand:
        site = OTHER_CENTRE.get((site, component), site)
    return f"{PREFIX[joint.region]}_{site}"


def wide_sheet(grades: dict, **extra) -> pd.DataFrame:
    row = {"patient_id": PATIENT, "visit_date": VISIT, **extra}
    for (joint, component), grade in grades.items():
        row[f"{_their_name(joint, component)}_{'E' if component == 'erosion' else 'J'}"] = grade
    return pd.DataFrame([row])


def long_sheet(grades: dict, date=VISIT) -> pd.DataFrame:
    rows: dict[str, dict] = {}
    for (joint, component), grade in grades.items():
        name = _their_name(joint, component)
        rows.setdefault(name, {"patient_id": PATIENT, "visit_date": date, "joint": name,
                               "erosion": None, "jsn": None})[component] = grade  # fmt: skip
    return pd.DataFrame(list(rows.values()))


def _save(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".xlsx":
        frame.to_excel(path, index=False, sheet_name="scores")
    else:
        frame.to_csv(path, index=False)
    return path


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*")
            if p.is_file()}  # fmt: skip


def _expected_joint_rows(grades: dict) -> dict[str, tuple[str, str]]:
    rows: dict[str, list[str]] = {}
    for (joint, component), grade in grades.items():
        rows.setdefault(joint, ["", ""])[0 if component == "erosion" else 1] = str(grade)
    return {k: tuple(v) for k, v in rows.items()}


@pytest.mark.parametrize(("form", "suffix"), [("wide", ".csv"), ("wide", ".xlsx"),
                                               ("long", ".csv"), ("long", ".xlsx")])  # fmt: skip
def test_other_centre_sheet_imports_through_the_bundled_map(handmade_cohort, tmp_path, form,
                                                            suffix):  # fmt: skip
    grades = _grades()
    # Excel sheets carry real date cells, CSVs text dates.
    date = datetime(2020, 2, 28) if suffix == ".xlsx" else VISIT
    frame = wide_sheet(grades) if form == "wide" else long_sheet(grades)
    frame["visit_date"] = date
    sheet = _save(frame, tmp_path / f"scores{suffix}")
    before = _snapshot(handmade_cohort)
    out = tmp_path / "scored"
    assert main(["import-scores", str(sheet), "--cohort", str(handmade_cohort),
                 "--out", str(out)]) == 0  # fmt: skip
    assert _snapshot(handmade_cohort) == before

    joints = pd.read_csv(out / "joint_scores.csv", dtype=str, keep_default_na=False)
    new = joints[(joints["patient_id"] == PATIENT) & (joints["visit_date"] == VISIT)]
    assert {r.joint: (r.erosion, r.jsn) for r in new.itertuples()} == _expected_joint_rows(grades)
    assert len(joints) == len(new) + 3  # the cohort's own grades are kept
    visits = read_cohort(out).visits.set_index(["patient_id", "visit_date"])
    scored = visits.loc[(PATIENT, pd.Timestamp(VISIT))]
    erosion = sum(g for (_, c), g in grades.items() if c == "erosion")
    jsn = sum(g for (_, c), g in grades.items() if c == "jsn")
    assert (scored["svdh_erosion"], scored["svdh_jsn"], scored["svdh_total"]) == (
        erosion, jsn, erosion + jsn)  # fmt: skip
    assert validate_cohort(out, progress=False, workers=1).ok


def test_visit_totals_in_a_wide_sheet_fill_visits_csv(handmade_cohort, tmp_path):
    frame = pd.DataFrame([{"patient_id": PATIENT, "visit_date": VISIT, "Overall_Tol": 12,
                           "Overall_erosion": 7, "Overall_narrowing": 5}])  # fmt: skip
    out = tmp_path / "scored"
    assert main(["import-scores", str(_save(frame, tmp_path / "t.csv")), "--cohort",
                 str(handmade_cohort), "--out", str(out)]) == 0  # fmt: skip
    visits = pd.read_csv(out / "visits.csv", dtype=str, keep_default_na=False)
    row = visits[(visits["patient_id"] == PATIENT) & (visits["visit_date"] == VISIT)].iloc[0]
    assert (row["svdh_total"], row["svdh_erosion"], row["svdh_jsn"]) == ("12", "7", "5")
    assert row["crp"] == "30"  # other columns carried over
    assert validate_cohort(out, progress=False, workers=1).ok


def test_user_joint_map_adds_names(handmade_cohort, tmp_path, capsys):
    frame = pd.DataFrame([{"patient_id": "p1", "visit_date": "2019-01-15",
                           "LH_knuckle3_E": 2, "Links Hand knuckle4_J": 1}])  # fmt: skip
    sheet = _save(frame, tmp_path / "s.csv")
    out = tmp_path / "scored"
    argv = ["import-scores", str(sheet), "--cohort", str(handmade_cohort), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown joint 'LH_knuckle3'" in err and "s.csv" in err and "--joint-map" in err
    assert "--ignore-unknown-joints" in err and not out.exists()

    user_map = tmp_path / "ours.yaml"
    user_map.write_text("regions:\n  hand_left: [links_hand]\n"
                        "svdh:\n  hand:\n    both:\n      knuckle3: mcp3\n      knuckle4: mcp4\n")  # fmt: skip
    assert main([*argv, "--joint-map", str(user_map)]) == 0
    joints = pd.read_csv(out / "joint_scores.csv", dtype=str, keep_default_na=False)
    got = joints[(joints["patient_id"] == "p1") & (joints["visit_date"] == "2019-01-15")]
    assert {r.joint: (r.erosion, r.jsn) for r in got.itertuples()} == {
        "hand_left_mcp2": ("2", "1"), "hand_left_ip": ("1", ""),
        "hand_left_mcp3": ("2", ""), "hand_left_mcp4": ("", "1")}  # fmt: skip


def test_ignore_unknown_joints_skips_them_with_a_warning(handmade_cohort, tmp_path, capsys):
    frame = pd.DataFrame([{"patient_id": PATIENT, "visit_date": VISIT, "LH_mcp2_E": 3,
                           "LH_elbow_E": 4}])  # fmt: skip
    out = tmp_path / "scored"
    assert main(["import-scores", str(_save(frame, tmp_path / "s.csv")), "--cohort",
                 str(handmade_cohort), "--out", str(out), "--ignore-unknown-joints"]) == 0  # fmt: skip
    assert "skipped unknown joints: LH_elbow" in capsys.readouterr().out
    joints = pd.read_csv(out / "joint_scores.csv", dtype=str)
    assert "hand_left_mcp2" in set(joints[joints["patient_id"] == PATIENT]["joint"])


def _bad_xlsx(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 not really a workbook")
    return path


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda p: _save(pd.DataFrame([{"patient_id": PATIENT, "visit_date": VISIT,
                                         "LH_mcp2_E": 6}]), p / "s.csv"),
         [], "s.csv: 1 problem(s); nothing was written\n  row 2 [LH_mcp2_E]: erosion 6 for "
             "hand_left_mcp2 is not an SvdH grade 0-5"),
        (lambda p: _save(pd.DataFrame([{"patient_id": PATIENT, "visit_date": VISIT,
                                         "LH_mcp2_E": "x"}]), p / "s.csv"),
         [], "row 2 [LH_mcp2_E]: 'x' is not a number"),
        (lambda p: _save(pd.DataFrame([{"patient_id": PATIENT, "visit_date": "28/02/2020",
                                         "LH_mcp2_E": 1}]), p / "s.csv"),
         [], "row 2: visit_date '28/02/2020' is not a date in YYYY-MM-DD form"),
        (lambda p: _save(pd.DataFrame([{"patient_id": "p1", "visit_date": VISIT, "joint": "LH_mcp2",
                                         "erosion": 1, "jsn": ""},
                                        {"patient_id": "p9", "visit_date": VISIT, "joint": "LH_mcp2",
                                         "erosion": 1, "jsn": ""}]), p / "s.xlsx"),
         [], "row 3: patient 'p9' is not in"),
        (lambda p: _save(pd.DataFrame([{"patient_id": "p1", "visit_date": VISIT, "joint": "LH_mcp2",
                                         "erosion": 1, "jsn": ""}]), p / "s.xlsx"),
         [], "row 2: patient 'p1' has no visit on 2020-02-28"),
        (lambda p: _save(pd.DataFrame([{"patient_id": PATIENT, "visit_date": VISIT,
                                         "LH_capitate_E": 1}]), p / "s.csv"),
         [], "hand_left_csl has no erosion component in SvdH; leave it empty"),
        (lambda p: _bad_xlsx(p / "s.xlsx"), [], "is not a readable Excel workbook"),
        (lambda p: _save(pd.DataFrame([{"patient_id": PATIENT, "visit_date": VISIT,
                                         "joint": "LH_wrist1", "larsen": 2}]), p / "s.csv"),
         [], "(Larsen grades are not stored in format v1 yet)"),
        (lambda p: _save(pd.DataFrame([{"patient_id": PATIENT, "visit_date": VISIT,
                                         "LH_mcp2_E": 1}]), p / "s.xlsx"),
         ["--sheet", "Readings"], "has no sheet 'Readings'; its sheets: scores"),
        (lambda p: _save(pd.DataFrame([{"patient_id": PATIENT, "visit_date": VISIT,
                                         "LH_mcp2_E": 1}]), p / "s.csv"),
         ["--joint-map", "{tmp}/missing.yaml"], "--joint-map {tmp}/missing.yaml: cannot read"),
        (lambda p: _save(pd.DataFrame([{"patient_id": PATIENT, "visit_date": VISIT,
                                         "LH_mcp2_E": 1}]), p / "s.csv"),
         ["--out", "{cohort}/inner"], "overlap"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_naming_row_and_fix_and_writes_nothing(handmade_cohort, tmp_path,
                                                                 capsys, make, extra, message):  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    sheet = make(work)
    fill = {"tmp": str(tmp_path), "cohort": str(handmade_cohort)}
    before_cohort, before_tmp = _snapshot(handmade_cohort), _snapshot(tmp_path)
    argv = ["import-scores", str(sheet), "--cohort", str(handmade_cohort),
            "--out", str(tmp_path / "scored"), *[a.format(**fill) for a in extra]]  # fmt: skip
    assert main(argv) == 2
    assert message.format(**fill) in capsys.readouterr().err
    assert _snapshot(handmade_cohort) == before_cohort and _snapshot(tmp_path) == before_tmp
    assert not (tmp_path / "scored").exists()


def test_bad_user_map_names_the_key_and_the_valid_sites(tmp_path):
    from progression.errors import ConfigError

    bad = tmp_path / "m.yaml"
    bad.write_text("svdh:\n  hand:\n    both:\n      knuckle2: mcp9\n")
    with pytest.raises(ConfigError, match="knuckle2: 'mcp9' is not an SvdH hand site; use one"):
        load_joint_map(bad)


def test_bundled_map_translates_larsen_names():
    names = load_joint_map()
    assert names.larsen_joint("LH_wrist1") == "hand_left_wrist_q1"
    assert names.larsen_joint("RF mtp-2") == "foot_right_mtp2"
    assert names.larsen_joint("RF_mtp1") is None  # not a Larsen (1995) unit
