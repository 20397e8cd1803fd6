"""Film styles (``progression simulate --style``): the default films are unchanged, another
scanner's films are deterministic by seed, and a style changes the films, never the truth."""

from __future__ import annotations

import dataclasses
import filecmp
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from progression.cli import main
from progression.cohort import load_image, validate_cohort
from progression.simulate import FILM_STYLES, SimulationConfig, render_region, simulate_cohort
from progression.simulate.cohort import RECORD, simulation_settings

TINY = {"n_patients": 8, "image_size": 64, "oracle_draws": 32}
# Everything a style must leave alone: the tables a user reads and the truth.
TRUTH_FILES = (
    "patients.csv", "visits.csv", "images.csv", "joint_scores.csv", "truth/truth.csv",
    "truth/truth_visits.csv", "truth/followup.csv", "truth/joint_truth.csv",
)  # fmt: skip

# Digests of the default films as rendered before film styles existed (commit b207801), by
# _cohort_digest / _render_digest below. They hold as long as numpy's random streams,
# scipy's gaussian_filter, Pillow's codecs and pydicom's pixel encoding do; after upgrading
# one of those, recompute them at that commit (git worktree) with the same two functions.
DEFAULT_COHORT_DIGEST = "14a289b4d520df8876f7cb0f10056679bf73669ba44bf62898eee0723ace0272"
DEFAULT_RENDER_DIGEST = "bd7bd6e3fffee8d5dc4c1cb55d5b8282eea285a76d78874a3564699fa8890bac"


def _cohort_digest(root: Path) -> str:
    """SHA-256 over every table and every decoded film (pixels, not file encodings), by path;
    truth/simulation.json (the settings record, which now names the style) left out."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == RECORD.as_posix():
            continue
        digest.update(rel.encode())
        if path.suffix == ".csv":
            digest.update(path.read_bytes())
        elif path.suffix == ".dcm":
            digest.update(pydicom.dcmread(path).PixelData)
        else:
            with Image.open(path) as image:
                digest.update(np.asarray(image).tobytes())
    return digest.hexdigest()


def _render_digest() -> str:
    """SHA-256 of a 256-px damaged left hand and right foot and their joint positions."""
    digest = hashlib.sha256()
    for kind, mirror in (("hand", False), ("foot", True)):
        img, locations = render_region(
            kind, mirror, {"mcp2": 3, "mtp5": 4}, {"mcp3": 2, "mtp1": 1}, 256,
            np.random.default_rng(11), 1.02,
        )  # fmt: skip
        digest.update(img.tobytes())
        digest.update(repr(sorted(locations.items())).encode())
    return digest.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    """The same tiny cohort (seed 3) in every film style."""
    base = tmp_path_factory.mktemp("styles")
    return {
        style: simulate_cohort(
            base / style, SimulationConfig(seed=3, style=style, **TINY), progress=False
        )
        for style in FILM_STYLES
    }


def test_default_style_renders_byte_identically_to_before_styles_existed(cohorts):
    assert _render_digest() == DEFAULT_RENDER_DIGEST
    assert _cohort_digest(cohorts["default"]) == DEFAULT_COHORT_DIGEST
    record = json.loads((cohorts["default"] / RECORD).read_text())
    assert record["settings"]["style"] == "default"


def test_cassette_style_is_deterministic_by_seed(tmp_path, cohorts):
    again = simulate_cohort(
        tmp_path / "again", SimulationConfig(seed=3, style="cassette", **TINY), progress=False
    )
    files = _files(cohorts["cassette"])
    assert files == _files(again)
    _, mismatch, errors = filecmp.cmpfiles(cohorts["cassette"], again, files, shallow=False)
    assert mismatch == [] and errors == []
    other = simulate_cohort(
        tmp_path / "other", SimulationConfig(seed=4, style="cassette", **TINY), progress=False
    )
    films = [load_image(c / pd.read_csv(c / "images.csv")["path"].iloc[0], 64)
             for c in (other, cohorts["cassette"])]  # fmt: skip
    assert not np.array_equal(*films)


def test_a_style_changes_the_films_and_never_the_truth(cohorts):
    default, cassette = cohorts["default"], cohorts["cassette"]
    for name in TRUTH_FILES:
        assert (cassette / name).read_bytes() == (default / name).read_bytes(), name
    paths = pd.read_csv(default / "images.csv")["path"]
    changed = [
        not np.array_equal(load_image(default / p, 64), load_image(cassette / p, 64))
        for p in paths
    ]
    assert all(changed)
    # joint positions are where the joints are on each film as written: they move
    where = {s: pd.read_csv(c / "truth" / "joint_locations.csv") for s, c in cohorts.items()}
    assert where["default"][["path", "joint"]].equals(where["cassette"][["path", "joint"]])
    assert not where["default"][["x", "y"]].equals(where["cassette"][["x", "y"]])
    record = json.loads((cassette / RECORD).read_text())
    assert record["settings"]["style"] == "cassette"
    assert record["film_style"] == dataclasses.asdict(FILM_STYLES["cassette"])
    assert validate_cohort(cassette, progress=False, workers=1).errors == []


def test_cassette_films_are_framed_wider_with_coarser_pixels_inside_a_collimated_field(cohorts):
    style = FILM_STYLES["cassette"]
    hand, _ = render_region("hand", False, {}, {}, 256, np.random.default_rng(0), style=style)
    foot, _ = render_region("foot", True, {}, {}, 256, np.random.default_rng(0), style=style)
    assert hand.shape == (256, 205) and foot.shape == (256, 205)  # 24 x 30 cm cassettes
    for img in (hand, foot):  # unexposed borders are bright, the air inside the field dark
        assert np.median(img[:2]) > 0.7 and np.median(img[:, -2:]) > 0.7
        assert np.median(img[30:60, 20:40]) < 0.3
    # every joint lies inside the field (insets are at most 4% of the film height)
    locations = pd.read_csv(cohorts["cassette"] / "truth" / "joint_locations.csv")
    assert locations["x"].between(0.06, 0.94).all() and locations["y"].between(0.05, 0.95).all()
    # the same joints span less of the film height: fewer pixels per joint
    spread = {
        s: pd.read_csv(c / "truth" / "joint_locations.csv").groupby("path")["y"].agg(np.ptp)
        for s, c in cohorts.items()
    }
    ratio = (spread["cassette"] / spread["default"]).median()
    assert ratio == pytest.approx(style.field, abs=0.05)
    # and the DICOM pixel spacing says so
    dicoms = {
        s: next(p for p in (c / "images").rglob("*_hand_left.dcm")) for s, c in cohorts.items()
    }
    mm = {s: float(pydicom.dcmread(p).ImagerPixelSpacing[0]) for s, p in dicoms.items()}
    assert mm["cassette"] == pytest.approx(mm["default"] / style.field, rel=1e-3)


def test_cassette_burns_an_l_on_left_and_an_r_on_right_films_in_a_top_corner():
    # without noise, so that the film without a marker differs only by the marker
    quiet = dataclasses.replace(FILM_STYLES["cassette"], noise_scale=0.0)
    bare = dataclasses.replace(quiet, marker=False)
    ink = {}
    for side, mirror in (("L", False), ("R", True)):
        marked, _ = render_region("hand", mirror, {}, {}, 256, np.random.default_rng(5), style=quiet)
        plain, _ = render_region("hand", mirror, {}, {}, 256, np.random.default_rng(5), style=bare)
        burned = np.abs(marked - plain) > 0.05
        rows, cols = np.nonzero(burned)
        assert rows.max() < 0.2 * 256  # near the top of the film
        assert cols.min() > 0.7 * 205 or cols.max() < 0.3 * 205  # in a corner
        ink[side] = burned.sum()
    assert ink["R"] > 1.3 * ink["L"]  # an R has more strokes than an L


def test_cli_style_option_lists_every_style_records_it_and_rejects_an_unknown_one(
    tmp_path, capsys
):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert all(name in usage for name in FILM_STYLES)
    args = ["simulate", "--out", str(tmp_path / "c"), "--patients", "2", "--image-size", "32",
            "--no-progress", "--workers", "1"]  # fmt: skip
    assert main([*args, "--style", "cassette"]) == 0
    assert "cassette films" in capsys.readouterr().out
    assert simulation_settings(tmp_path / "c")["style"] == "cassette"
    assert main([*args, "--overwrite", "--style", "fancy"]) == 2
    err = capsys.readouterr().err
    assert "'style'" in err and "default, cassette" in err and "--style" in err


def test_a_cohort_recorded_before_styles_existed_is_still_reused(tmp_path):
    cfg = SimulationConfig(n_patients=3, seed=2, render_images=False, oracle_draws=16)
    out = simulate_cohort(tmp_path / "old", cfg, progress=False)
    record = json.loads((out / RECORD).read_text())
    del record["settings"]["style"], record["film_style"]  # as such cohorts were written
    (out / RECORD).write_text(json.dumps(record))
    stamp = (out / "visits.csv").stat().st_mtime_ns
    assert simulation_settings(out)["style"] == "default"
    simulate_cohort(out, cfg, progress=False, reuse=True)
    assert (out / "visits.csv").stat().st_mtime_ns == stamp
