"""The per-patient HTML report: plain-language summary, every figure it references exists;
per-joint model readings and their change since the first film."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from progression.explain.joints import READING_COLUMNS, joint_change
from progression.explain.report import (
    CovariateEffect,
    PatientReport,
    RegionImage,
    VisitView,
    referenced_images,
    render_report,
    summary_sentences,
)
from progression.scoring import joints_in_region


def _forecasts(patient="P1", note=""):
    return pd.DataFrame(
        {
            "patient_id": patient,
            "index_date": "2021-05-20",
            "horizon_years": [2.0, 1.0],
            "svdh_index_pred": 17.5,
            "delta_svdh_pred": [8.94, 4.2],
            "delta_svdh_lo": [-0.04, 1.0],
            "delta_svdh_hi": [16.0, 8.1],
            "p_rapid": [0.41, 0.38],
            "risk_score": 4.2,
            "note": note,
        }
    )


def _visit(date: str, regions=("hand_left", "hand_right"), heat=True, observed=10.0):
    rng = np.random.default_rng(len(date))
    images = [
        RegionImage(r, rng.random((40, 40)).astype(np.float32), rng.random((40, 40)) if heat else None)
        for r in regions
    ]
    return VisitView(date, observed_svdh=observed, estimated_svdh=11.0, contribution=0.5, images=images)


def test_summary_reads_as_plain_language_with_units_and_interval():
    report = PatientReport("P1", _forecasts(), [_visit("2021-05-20")], interval_level=0.9)
    assert summary_sentences(report) == [
        "Predicted change over 1 year: +4.2 SvdH units (90% interval 1.0 to 8.1); "
        "rapid progression probability 38%.",
        "Predicted change over 2 years: +8.9 SvdH units (90% interval 0.0 to 16.0); "
        "rapid progression probability 41%.",
    ]


def test_report_for_many_visits_references_only_existing_images(tmp_path):
    visits = [_visit(d) for d in ("2018-01-10", "2019-02-11", "2020-03-12", "2021-05-20")]
    visits[1].observed_svdh = None  # unscored visit
    report = PatientReport(
        "P1",
        _forecasts(),
        visits,
        covariates=[CovariateEffect("CRP", "35 mg/L", 1.3), CovariateEffect("Smoker", "no", -0.4)],
        interval_calibrated=True,
        model_name="run abc",
    )
    html_path = render_report(report, tmp_path / "P1")
    sources = referenced_images(html_path)
    assert len(sources) == 1 + 4 * 2 * 2  # chart + (radiograph, forecast map) x 2 regions x 4 visits
    for src in sources:
        assert not Path(src).is_absolute()
        with Image.open(html_path.parent / src) as png:
            assert png.format == "PNG"
    html = html_path.read_text()
    assert "Predicted change over 1 year: +4.2 SvdH units (90% interval 1.0 to 8.1)" in html
    assert "35 mg/L" in html and "+1.3 units" in html
    assert "not scored" in html
    assert "conformal calibration" in html
    assert sorted(p.name for p in html_path.parent.iterdir()) == ["figures", "report.html"]


def test_report_for_a_single_visit_without_images_or_heatmaps_still_renders(tmp_path):
    visit = VisitView("2021-05-20", observed_svdh=None, estimated_svdh=None, images=[])
    note = "no usable image: covariates only"
    html_path = render_report(PatientReport("P<2>", _forecasts("P<2>", note), [visit]), tmp_path)
    html = html_path.read_text()
    assert referenced_images(html_path) == ["figures/scores.png"]
    assert (tmp_path / "figures" / "scores.png").is_file()
    assert "No radiograph at this visit." in html
    assert "no usable image: covariates only" in html
    assert "P&lt;2&gt;" in html and "P<2>" not in html  # user text is escaped
    assert "may be too narrow" in html  # uncalibrated interval is disclosed


def test_tiny_covariate_effects_are_counted_not_listed(tmp_path):
    effects = [CovariateEffect("CRP", "35 mg/L", 1.3), CovariateEffect("Smoker", "no", 0.01),
               CovariateEffect("ESR", "20 mm/h", -0.02)]
    visit = [_visit("2021-05-20")]
    html = render_report(PatientReport("P1", _forecasts(), visit, effects), tmp_path / "a").read_text()
    assert "+1.3 units" in html and "Smoker" not in html
    assert "2 other recorded values each changed the forecast by less than 0.05 units." in html
    html = render_report(PatientReport("P1", _forecasts(), visit, effects[1:]), tmp_path / "b").read_text()
    assert "None of the 2 recorded values changed the 1-year forecast by 0.05 SvdH units or more." in html


def test_model_reading_far_from_the_reader_is_flagged(tmp_path):
    visits = [_visit("2020-01-01", observed=10.0), _visit("2021-05-20", observed=30.0)]  # model: 11
    html = render_report(PatientReport("P1", _forecasts(), visits), tmp_path).read_text()
    assert ("differs from the reader&#39;s score by more than 5 SvdH units at 1 of 2 scored visits: "
            "treat this forecast with caution") in html
    visits[1].observed_svdh = 12.0
    html = render_report(PatientReport("P1", _forecasts(), visits), tmp_path).read_text()
    assert "treat this forecast with caution" not in html


def test_covariates_only_model_says_it_does_not_look_at_radiographs(tmp_path):
    visit = VisitView("2021-05-20", observed_svdh=10.0, estimated_svdh=11.0)
    report = PatientReport("P1", _forecasts(), [visit], uses_images=False)
    html = render_report(report, tmp_path).read_text()
    assert "it does not look at the radiographs" in html
    assert "No radiograph at this visit." not in html


def _readings(dates, regions=("hand_left", "foot_right"), scored=()):
    """A per-joint reading table (joint_readings layout): damage grows by 0.5 units a visit at
    every joint of the region; the reader scored the visits in ``scored``."""
    rows = []
    for v, date in enumerate(dates):
        for region in regions:
            for joint in joints_in_region(region):
                reader = (1.0, 0.0) if date in scored else (np.nan, np.nan)
                rows.append((date, region, joint.name, 0.5 * v, 0.1, *reader))
    return pd.DataFrame(rows, columns=READING_COLUMNS)


def test_joint_change_is_read_between_each_region_s_first_and_index_film():
    readings = _readings(["2019-01-01", "2020-01-01", "2021-05-20"])
    # the left foot is first filmed at the index visit: nothing to compare it with
    readings = pd.concat([readings, _readings(["2021-05-20"], regions=("foot_left",))])
    change = joint_change(readings)
    assert set(change["region"]) == {"hand_left", "foot_right"}
    assert len(change) == 22 + 6
    assert (change["first_date"] == "2019-01-01").all() and (change["index_date"] == "2021-05-20").all()
    assert np.allclose(change["erosion_change"], 1.0) and np.allclose(change["jsn_change"], 0.0)
    assert np.allclose(change["change"], 1.0)
    assert joint_change(_readings(["2021-05-20"])).empty


def test_report_shows_per_joint_readings_with_the_reader_and_the_change(tmp_path):
    dates = ("2018-01-10", "2019-02-11", "2020-03-12", "2021-05-20")
    visits = [_visit(d) for d in dates]
    joints = _readings(dates, scored={"2021-05-20"})
    html_path = render_report(PatientReport("P1", _forecasts(), visits, joints=joints), tmp_path)
    sources = referenced_images(html_path)
    assert [s for s in sources if "joints_" in s] == ["figures/joints_hand_left.png",
                                                      "figures/joints_foot_right.png"]
    for src in sources:
        with Image.open(html_path.parent / src) as png:
            assert png.format == "PNG"
    html = html_path.read_text()
    assert "Per-joint damage (model reading)" in html
    assert "These are model readings, not a reader's scores." in html
    assert "black marks: the reader's score of the same joint" in html
    # 22 hand joints x (1.5 erosion + 0.1 JSN); the reader gave 1 erosion to every joint
    assert "Left hand</b>: model reading 35.2 units in total (reader: 22.0)" in html
    assert "Largest increases read since 2018-01-10: PIP2 +1.5, PIP3 +1.5, PIP4 +1.5." in html


def test_per_joint_section_of_a_one_visit_patient_has_no_change(tmp_path):
    joints = _readings(["2021-05-20"], regions=("hand_right",))
    report = PatientReport("P1", _forecasts(), [_visit("2021-05-20", regions=("hand_right",))], joints=joints)
    html_path = render_report(report, tmp_path)
    html = html_path.read_text()
    assert "figures/joints_hand_right.png" in referenced_images(html_path)
    assert all((tmp_path / src).is_file() for src in referenced_images(html_path))
    assert "No earlier radiograph of this region to compare with." in html
    assert "Lower panel" not in html and "black marks" not in html
    assert "(reader:" not in html  # not scored at this visit


def test_writing_a_report_leaves_the_callers_matplotlib_backend_and_pyplot_alone(tmp_path):
    import matplotlib
    from matplotlib import pyplot as plt

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # e.g. a notebook's inline backend: a report must not switch it
    try:
        dates = ("2020-03-12", "2021-05-20")
        report = PatientReport("P1", _forecasts(), [_visit(d) for d in dates],
                               joints=_readings(dates, scored={"2021-05-20"}))
        render_report(report, tmp_path)
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == []
    finally:
        matplotlib.use(before)
