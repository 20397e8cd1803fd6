"""The synthetic cohort: determinism, targets of the disease process, visible damage,
the oracle, and the round trip through the cohort reader/validator."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from progression.cli import main
from progression.cohort import load_image, read_cohort, validate_cohort
from progression.columns import PREDICTION_COLUMNS
from progression.errors import ConfigError
from progression.scoring import aggregate_joint_scores, joints_in_region
from progression.simulate import Oracle, SimulationConfig, render_region, simulate_cohort
from progression.simulate.cohort import simulation_settings

TINY = {"n_patients": 8, "image_size": 64, "oracle_draws": 32}


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "cohort"
    return simulate_cohort(out, SimulationConfig(seed=3, **TINY), progress=False)


@pytest.fixture(scope="module")
def statistics_cohort(tmp_path_factory) -> pd.DataFrame:
    """400 patients without images: enough for the cohort-level targets."""
    out = tmp_path_factory.mktemp("stats") / "cohort"
    cfg = SimulationConfig(n_patients=400, seed=0, render_images=False, oracle_draws=64)
    simulate_cohort(out, cfg, progress=False)
    return pd.read_csv(out / "truth" / "truth.csv")


def test_same_seed_gives_identical_files_whatever_the_number_of_workers(tmp_path, tiny_cohort):
    again = simulate_cohort(
        tmp_path / "again", SimulationConfig(seed=3, **TINY), workers=2, progress=False
    )
    files = _files(tiny_cohort)
    assert files == _files(again)
    assert any(str(f).endswith(".dcm") for f in files) and any(
        str(f).endswith(".png") for f in files
    )
    _, mismatch, errors = filecmp.cmpfiles(
        tiny_cohort, again, [str(f) for f in files], shallow=False
    )
    assert mismatch == [] and errors == []


def test_different_seed_gives_different_patients_and_images(tmp_path, tiny_cohort):
    other = simulate_cohort(tmp_path / "other", SimulationConfig(seed=4, **TINY), progress=False)
    assert (other / "visits.csv").read_text() != (tiny_cohort / "visits.csv").read_text()
    first = pd.read_csv(tiny_cohort / "images.csv")["path"].iloc[0]
    second = pd.read_csv(other / "images.csv")["path"].iloc[0]
    assert not np.array_equal(load_image(tiny_cohort / first, 64), load_image(other / second, 64))


def test_switching_images_off_leaves_every_table_and_the_truth_unchanged(tmp_path, tiny_cohort):
    cfg = SimulationConfig(seed=3, render_images=False, **TINY)
    tables = simulate_cohort(tmp_path / "tables", cfg, progress=False)
    for name in ("patients.csv", "visits.csv", "images.csv", "joint_scores.csv", "truth/truth.csv"):
        assert (tables / name).read_bytes() == (tiny_cohort / name).read_bytes(), name
    assert not (tables / "images").exists()


def test_cohort_passes_the_validator_and_reads_back(tiny_cohort):
    report = validate_cohort(tiny_cohort, progress=False, workers=1)
    assert report.errors == []
    cohort = read_cohort(tiny_cohort)
    truth = pd.read_csv(tiny_cohort / "truth" / "truth.csv", dtype={"patient_id": str})
    assert sorted(cohort.patient_ids) == sorted(truth["patient_id"])


def test_reader_scores_in_visits_equal_the_sum_of_joint_scores(tiny_cohort):
    visits = pd.read_csv(tiny_cohort / "visits.csv", dtype={"patient_id": str})
    joints = pd.read_csv(tiny_cohort / "joint_scores.csv", dtype={"patient_id": str})
    totals = aggregate_joint_scores(joints)
    merged = visits.dropna(subset=["svdh_total"]).merge(totals, on=["patient_id", "visit_date"])
    assert len(merged) == visits["svdh_total"].notna().sum() > 0
    for col in ("svdh_total", "svdh_erosion", "svdh_jsn"):
        np.testing.assert_array_equal(merged[f"{col}_x"], merged[f"{col}_y"])


def test_reader_noise_is_small_and_unbiased_enough(tiny_cohort):
    visits = pd.read_csv(tiny_cohort / "visits.csv")
    true = pd.read_csv(tiny_cohort / "truth" / "truth_visits.csv")
    both = visits.merge(true, on=["patient_id", "visit_date"]).dropna(subset=["svdh_total"])
    error = both["svdh_total"] - both["svdh_total_true"]
    assert error.abs().max() <= 8 and abs(error.mean()) < 1.5


def test_history_ends_at_the_index_and_follow_up_lives_only_in_truth(tiny_cohort):
    visits = pd.read_csv(tiny_cohort / "visits.csv")
    images = pd.read_csv(tiny_cohort / "images.csv")
    truth = pd.read_csv(tiny_cohort / "truth" / "truth.csv")
    followup = pd.read_csv(tiny_cohort / "truth" / "followup.csv")
    last = visits.groupby("patient_id")["visit_date"].max()
    assert (truth.set_index("patient_id")["index_date"] == last).all()
    imaged = truth[truth["has_images"] == 1]
    index_images = images.merge(
        imaged, left_on=["patient_id", "visit_date"], right_on=["patient_id", "index_date"]
    )
    assert set(index_images["patient_id"]) == set(imaged["patient_id"])
    first_follow = followup.groupby("patient_id")["visit_date"].min()
    assert (first_follow > last).all()
    assert sorted(followup["years_from_index"].unique()) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    one_year = followup[followup["years_from_index"] == 1.0].set_index("patient_id")
    expected = one_year["svdh_total_true"] - truth.set_index("patient_id")["svdh_true_index"]
    assert (expected == truth.set_index("patient_id")["delta_true_1y"]).all()


def test_every_image_has_its_joint_locations_inside_the_frame(tiny_cohort):
    images = pd.read_csv(tiny_cohort / "images.csv")
    locations = pd.read_csv(tiny_cohort / "truth" / "joint_locations.csv")
    counts = locations.groupby("path").size()
    expected = images["region"].map(lambda r: len(joints_in_region(r)))
    assert (counts.reindex(images["path"]).to_numpy() == expected.to_numpy()).all()
    assert locations[["x", "y"]].stack().between(0, 1).all()


def test_dicom_files_mix_photometric_interpretations_and_load_bone_bright(tiny_cohort):
    images = pd.read_csv(tiny_cohort / "images.csv")
    dicoms = [tiny_cohort / p for p in images["path"] if p.endswith(".dcm")]
    kinds = {pydicom.dcmread(p, stop_before_pixels=True).PhotometricInterpretation for p in dicoms}
    assert kinds == {"MONOCHROME1", "MONOCHROME2"}
    for path in images["path"]:
        img = load_image(tiny_cohort / path, 64)
        # the air in the top corners is darker than the middle of the hand or foot
        assert img[:6, :6].mean() < img[24:40, 24:40].mean(), path


def test_oracle_gives_a_predictions_table_per_patient_and_horizon(tiny_cohort):
    pred = Oracle.load(tiny_cohort).predictions()
    assert list(pred.columns) == list(PREDICTION_COLUMNS)
    assert len(pred) == 2 * TINY["n_patients"]
    assert sorted(pred["horizon_years"].unique()) == [1.0, 2.0]
    assert pred["p_rapid"].between(0, 1).all()
    assert (pred["delta_svdh_lo"] <= pred["delta_svdh_pred"]).all()
    assert (pred["delta_svdh_pred"] <= pred["delta_svdh_hi"]).all()


def test_oracle_load_names_the_missing_truth(tmp_path):
    with pytest.raises(Exception, match="truth.csv' not found"):
        Oracle.load(tmp_path)


def test_cohort_progresses_like_ra_cohorts(statistics_cohort):
    truth = statistics_cohort
    yearly = truth["delta_true_1y"].mean()
    assert 1.5 <= yearly <= 3.0
    assert 0.10 <= truth["rapid_true_1y"].mean() <= 0.20
    assert (truth["delta_true_1y"] == 0).mean() >= 0.25  # many do not progress in a year
    assert truth["svdh_true_index"].quantile(0.9) > 30 and truth["svdh_true_index"].max() > 100
    assert (truth["has_images"] == 0).sum() >= 1


def test_oracle_beats_the_cohort_mean_and_is_calibrated(statistics_cohort):
    truth = statistics_cohort
    for h in ("1y", "2y"):
        oracle_mae = (truth[f"oracle_delta_{h}"] - truth[f"delta_true_{h}"]).abs().mean()
        mean_mae = (truth[f"delta_true_{h}"].mean() - truth[f"delta_true_{h}"]).abs().mean()
        assert oracle_mae < 0.75 * mean_mae
        assert truth[f"oracle_delta_{h}"].mean() == pytest.approx(
            truth[f"delta_true_{h}"].mean(), rel=0.15
        )
        assert truth[f"oracle_p_rapid_{h}"].mean() == pytest.approx(
            truth[f"rapid_true_{h}"].mean(), abs=0.04
        )


def _joint_box(img: np.ndarray, location: tuple[float, float], half: float = 0.012) -> float:
    h, w = img.shape
    cx, cy, r = location[0] * w, location[1] * h, max(1.0, half * h)
    return float(img[int(cy - r) : int(cy + r) + 1, int(cx - r) : int(cx + r) + 1].mean())


@pytest.mark.parametrize(
    ("kind", "site"), [("hand", "mcp3"), ("hand", "radiocarpal"), ("foot", "mtp5")]
)
def test_joint_space_narrowing_brightens_the_joint_space_grade_by_grade_at_128_px(kind, site):
    means = []
    for grade in range(5):
        img, locations = render_region(
            kind, False, {}, {site: grade}, 128, np.random.default_rng(5)
        )
        means.append(_joint_box(img, locations[site]))
    assert np.all(np.diff(means) > 0.015)  # each grade visible above the pixel noise (SD 0.02)
    assert means[4] - means[0] > 0.1  # ankylosis: bone bridges the joint


@pytest.mark.parametrize(
    ("kind", "site", "scale"), [("hand", "mcp2", 1), ("hand", "ulna", 1), ("foot", "mtp1", 2)]
)
def test_erosions_remove_more_bone_with_each_grade_and_grade_one_shows_at_128_px(kind, site, scale):
    base, _ = render_region(kind, False, {}, {}, 128, np.random.default_rng(3))
    removed = []
    for grade in range(1, 6):
        img, _ = render_region(
            kind, False, {site: grade * scale}, {}, 128, np.random.default_rng(3)
        )
        removed.append(int(((base - img) > 0.08).sum()))  # same seed: same pose and noise
    assert removed[0] >= 2
    assert removed[-1] > 3 * removed[0] and removed == sorted(removed)


def test_hands_and_feet_are_taller_than_wide():
    hand, _ = render_region("hand", False, {}, {}, 100, np.random.default_rng(0))
    foot, _ = render_region("foot", True, {}, {}, 100, np.random.default_rng(0))
    assert hand.shape == (100, 80) and foot.shape == (100, 62)
    assert hand.dtype == np.float32 and hand.min() >= 0.0 and hand.max() <= 1.0


def test_cli_simulates_refuses_to_overwrite_and_rejects_bad_settings(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "simulate",
        "--out",
        str(out),
        "--patients",
        "3",
        "--image-size",
        "32",
        "--no-progress",
        "--workers",
        "1",
    ]
    assert main(args) == 0
    assert "rapid progressors" in capsys.readouterr().out
    assert (out / "truth" / "followup.csv").is_file()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--scored-fraction", "1.5"]) == 2
    assert "scored_fraction" in capsys.readouterr().err


def test_config_check_names_the_setting():
    with pytest.raises(ConfigError, match="followup_interval"):
        SimulationConfig(followup_interval=0.3).check()


def test_reuse_keeps_a_complete_cohort_with_the_same_settings_untouched(tmp_path):
    cfg = SimulationConfig(n_patients=4, seed=5, render_images=False, oracle_draws=16)
    out = simulate_cohort(tmp_path / "c", cfg, progress=False)
    assert simulation_settings(out)["n_patients"] == 4 and not (out / "truth" / "UNFINISHED").exists()
    stamp = (out / "visits.csv").stat().st_mtime_ns
    assert simulate_cohort(out, cfg, progress=False, reuse=True) == out
    assert (out / "visits.csv").stat().st_mtime_ns == stamp

    other = SimulationConfig(n_patients=5, seed=5, render_images=False, oracle_draws=16)
    with pytest.raises(ConfigError, match=r"other settings \(n_patients 4 \(asked: 5\)\)"):
        simulate_cohort(out, other, progress=False, reuse=True)
    simulate_cohort(out, other, progress=False, reuse=True, overwrite=True)
    assert len(pd.read_csv(out / "patients.csv")) == 5


def test_reuse_replaces_a_simulation_left_unfinished_but_never_a_users_folder(tmp_path):
    cfg = SimulationConfig(n_patients=3, seed=1, render_images=False, oracle_draws=16)
    out = tmp_path / "interrupted"
    (out / "truth").mkdir(parents=True)
    (out / "truth" / "UNFINISHED").touch()  # what a killed run leaves, with some images
    (out / "images").mkdir()
    (out / "images" / "P0001.png").write_bytes(b"half")
    assert simulation_settings(out) is None
    simulate_cohort(out, cfg, progress=False, reuse=True)
    assert not (out / "images" / "P0001.png").exists() and simulation_settings(out) is not None

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not a simulated cohort"):
        simulate_cohort(mine, cfg, progress=False, reuse=True, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep"
