"""`progression explain` on a real (tiny) trained model: reports render, errors are clear."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from progression import cli
from progression.explain.report import referenced_images

pytestmark = pytest.mark.slow  # trains a tiny image model (about 20 s of CPU)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny image model (48 px, 2 epochs) on 10 simulated patients; one patient's history is
    cut to its last visit so the cohort has a single-visit patient."""
    from progression.config import load_config
    from progression.simulate import SimulationConfig, simulate_cohort
    from progression.train import fit

    work = tmp_path_factory.mktemp("explain")
    root = simulate_cohort(
        work / "cohort", SimulationConfig(n_patients=10, seed=5, image_size=48), progress=False
    )
    visits = pd.read_csv(root / "visits.csv", dtype={"patient_id": str})
    images = pd.read_csv(root / "images.csv", dtype={"patient_id": str})
    counts = images.groupby("patient_id")["visit_date"].nunique().sort_values()
    one, many = counts.index[-2], counts.index[-1]
    last = images.loc[images["patient_id"] == one, "visit_date"].max()
    for name, frame in (("visits.csv", visits), ("images.csv", images)):
        keep = (frame["patient_id"] != one) | (frame["visit_date"] == last)
        frame[keep].to_csv(root / name, index=False)
    if (root / "joint_scores.csv").is_file():
        scores = pd.read_csv(root / "joint_scores.csv", dtype={"patient_id": str})
        keep = (scores["patient_id"] != one) | (scores["visit_date"] == last)
        scores[keep].to_csv(root / "joint_scores.csv", index=False)
    cfg = load_config("tiny", [
        f"data.path={root}", "data.image_size=48", f"data.cache_dir={work / 'cache'}",
        f"train.output_dir={work / 'runs'}", f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}",
        "tracking.log_model=false", "train.progress=false", "train.image_epochs=1",
        "train.max_epochs=2",
    ])
    result = fit(cfg)
    return {"root": root, "checkpoint": result.checkpoint_path, "one": one, "many": many,
            "n_many": int(counts[many]), "work": work}


def test_reports_render_for_a_one_visit_and_a_many_visit_patient(trained, tmp_path):
    from progression.predict import predict_cohort

    out = tmp_path / "reports"
    code = cli.main(["explain", "--checkpoint", str(trained["checkpoint"]), "--data",
                     str(trained["root"]), "--patient", trained["one"], "--patient",
                     trained["many"], "--out", str(out), "--quiet", "--steps", "4"])
    assert code == 0
    predictions = predict_cohort(trained["checkpoint"], trained["root"], progress=False)
    for pid, n_visits in ((trained["one"], 1), (trained["many"], trained["n_many"])):
        page = out / pid / "report.html"
        html = page.read_text()
        sources = referenced_images(page)
        assert sources[0] == "figures/scores.png"
        for src in sources:
            assert (page.parent / src).is_file(), src
        # radiograph + damage map + forecast map for every film of every visit, and one
        # per-joint figure per region filmed at the index visit
        films = [s for s in sources if re.fullmatch(r"figures/v\d\d_(hand|foot)_(left|right)\.png", s)]
        index_films = [s for s in films if s.startswith(f"figures/v{n_visits:02d}_")]
        joint_maps = [s for s in sources if s.startswith("figures/joints_")]
        assert joint_maps == [s.replace(f"v{n_visits:02d}_", "joints_") for s in index_films]
        assert len(sources) == 1 + 3 * len(films) + len(joint_maps)
        assert len({s[8:11] for s in films}) == n_visits
        assert "Per-joint damage (model reading)" in html
        assert ("No earlier radiograph of this region to compare with." in html) == (n_visits == 1)
        row = predictions[(predictions["patient_id"] == pid) & (predictions["horizon_years"] == 1.0)].iloc[0]
        sign = "+" if row.delta_svdh_pred >= 0.05 else ""
        assert (f"Predicted change over 1 year: {sign}{row.delta_svdh_pred:.1f} SvdH units "
                f"(90% interval {row.delta_svdh_lo:.1f} to {row.delta_svdh_hi:.1f})") in html
        assert f"rapid progression probability {row.p_rapid:.0%}" in html


def test_per_joint_readings_cover_every_joint_of_every_film(trained):
    """One row per joint of each film's region, in SvdH units within each joint's scale, with
    the reader's grades of joint_scores.csv next to them; the change since the first film."""
    from progression.cohort import read_cohort
    from progression.explain.inputs import load_patient
    from progression.explain.joints import joint_change, joint_readings
    from progression.scoring import joint_by_name, joints_in_region
    from progression.trained import load_trained

    loaded = load_trained(trained["checkpoint"])
    model, spec = loaded.model.eval(), loaded.covariates
    cohort = read_cohort(trained["root"]).subset([trained["many"]])
    patient = load_patient(model, spec, cohort, 48, trained["work"] / "cache")
    readings = joint_readings(model, patient)

    assert len(readings) == sum(len(joints_in_region(r)) for r in cohort.images["region"])
    for (_, region), rows in readings.groupby(["visit_date", "region"]):
        assert list(rows["joint"]) == [j.name for j in joints_in_region(region)]
    for column in ("erosion_pred", "jsn_pred"):
        assert np.isfinite(readings[column]).all() and (readings[column] >= 0).all()
    scale = readings["joint"].map(lambda j: joint_by_name(j).erosion_max or 0)
    assert (readings["erosion_pred"] <= scale).all()
    assert (readings.loc[scale == 0, "erosion_pred"] == 0).all()  # cmc3 etc.: no erosion site

    scores = pd.read_csv(trained["root"] / "joint_scores.csv", dtype={"patient_id": str})
    scores = scores[scores["patient_id"] == trained["many"]]
    read = readings.merge(scores, on=["visit_date", "joint"])
    assert len(read) > 0
    assert np.allclose(read["erosion_reader"], read["erosion"], equal_nan=True)
    assert np.allclose(read["jsn_reader"], read["jsn"], equal_nan=True)

    change = joint_change(readings)
    assert len(change) > 0 and np.isfinite(change["change"]).all()
    index = readings[readings["visit_date"] == readings["visit_date"].max()]
    assert set(change["joint"]) <= set(index["joint"])


def test_unknown_patient_is_one_clear_message(trained, tmp_path, capsys):
    code = cli.main(["explain", "--checkpoint", str(trained["checkpoint"]), "--data",
                     str(trained["root"]), "--patient", "NOBODY", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "patient 'NOBODY' is not in" in err and "patients.csv" in err
    assert "Traceback" not in err


def test_reports_are_never_written_inside_the_cohort(trained, capsys):
    before = sorted(p.name for p in trained["root"].iterdir())
    code = cli.main(["explain", "--checkpoint", str(trained["checkpoint"]), "--data",
                     str(trained["root"]), "--patient", trained["many"], "--out",
                     str(trained["root"] / "reports")])
    assert code == 2
    assert "inside the cohort directory" in capsys.readouterr().err
    assert sorted(p.name for p in trained["root"].iterdir()) == before


def test_fit_writes_a_model_card_and_explain_adds_evaluation_metrics(trained, tmp_path):
    checkpoint = Path(trained["checkpoint"])
    meta = torch.load(checkpoint, weights_only=False)["progression"]
    card = (checkpoint.parent.parent / "MODEL_CARD.md").read_text()
    assert meta["cohort_fingerprint"] in card
    assert "SIMULATED cohort" in card
    assert f"- train patients: {len(meta['split']['train'])}" in card

    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({  # the layout of evaluate's metrics.json
        "model": "model",
        "metrics": {"model": {"horizons": {"1y": {"mae_delta": {"value": 2.5, "ci_lo": 2.0, "ci_hi": 3.1, "n": 40}}},
                              "overall": {}}},
    }))
    target = tmp_path / "card.md"
    code = cli.main(["explain", "--checkpoint", str(checkpoint), "--model-card", str(target),
                     "--metrics", str(metrics)])
    assert code == 0
    assert "| `test/mae_delta_1y` | mean absolute error of the predicted change, 1-year horizon | 2.5 | 2 to 3.1 | 40 | SvdH units |" in target.read_text()


def _blobs(points: pd.DataFrame, size: int) -> np.ndarray:
    """A heatmap with one sharp blob at each (x, y) (fractions of the side)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    cam = np.zeros((size, size))
    for x, y in points[["x", "y"]].itertuples(index=False):
        cam += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 0.015**2))
    return cam


def test_joint_hit_rate_finds_the_truly_changed_joints_of_simulated_films(trained):
    """Maps that light up exactly the joints that worsened (from the simulator's truth) score a
    perfect hit rate, far above random: joint positions, the padded frame the model sees and
    the truth tables line up. The tiny model's own Grad-CAM maps go through the same path."""
    from progression.cohort import read_cohort
    from progression.explain.attributions import progressing_joints
    from progression.explain.localisation import (
        FilmHeatmaps,
        film_shape,
        index_film_heatmaps,
        localisation_hit_rates,
        square_frame,
    )
    from progression.scoring import joints_in_region

    root, size = trained["root"], 48
    truth = pd.read_csv(root / "truth" / "joint_truth.csv", dtype={"patient_id": str})
    where = pd.read_csv(root / "truth" / "joint_locations.csv")
    images = pd.read_csv(root / "images.csv", dtype={"patient_id": str})
    index = images.groupby("patient_id")["visit_date"].transform("max")
    films = []
    for film in images[images["visit_date"] == index].itertuples(index=False):
        first = truth.loc[truth["patient_id"] == film.patient_id, "visit_date"].min()
        worse = progressing_joints(truth, film.patient_id, first, film.visit_date)
        grades = truth[(truth["patient_id"] == film.patient_id) & (truth["visit_date"] == film.visit_date)]
        damaged = set(grades.loc[grades["erosion"].fillna(0) + grades["jsn"].fillna(0) > 0, "joint"])
        joints = square_frame(where[where["path"] == film.path], *film_shape(str(root / film.path)), size)
        grade = truth.assign(grade=truth["erosion"].fillna(0) + truth["jsn"].fillna(0))
        grade = grade[grade["patient_id"] == film.patient_id].pivot_table(
            index="joint", columns="visit_date", values="grade")
        region_joints = [j.name for j in joints_in_region(film.region)]
        true_change = (grade[film.visit_date] - grade[first]).reindex(region_joints)
        films.append(FilmHeatmaps(
            film.patient_id, film.visit_date, film.region, str(root / film.path),
            change=_blobs(joints[joints["joint"].isin(worse)], size),
            damage=_blobs(joints[joints["joint"].isin(damaged)], size),
            joint_change=true_change,
        ))
    rates = localisation_hit_rates(films, root, size, k=3)
    for name in ("progressed_before_index", "damaged_at_index", "joint_head_progressed_before_index"):
        assert rates[name].n_images >= 5
        assert rates[name].hit_rate == 1.0 and rates[name].precision > rates[name].random_precision
        assert rates[name].random_hit_rate < 0.95
    # the per-joint head's ranking is scored on the same films with the same exact baseline
    head, maps = rates["joint_head_progressed_before_index"], rates["progressed_before_index"]
    assert (head.n_images, head.random_hit_rate, head.random_precision) == (
        maps.n_images, maps.random_hit_rate, maps.random_precision)

    cohort = read_cohort(root)
    model_maps = list(index_film_heatmaps(trained["checkpoint"], cohort, cohort.patient_ids[:4], progress=False))
    assert {m.change.shape for m in model_maps} == {(size, size)}
    assert all(np.isfinite(m.change).all() and (m.damage >= 0).all() for m in model_maps)
    measured = localisation_hit_rates(model_maps, root, size, k=3)
    assert 0 < measured["damaged_at_index"].n_images <= rates["damaged_at_index"].n_images
    assert 0.0 <= measured["damaged_at_index"].hit_rate <= 1.0
    # the head's own readings: one change per joint of the region for films filmed before
    read = [m for m in model_maps if m.joint_change is not None]
    assert read and all(len(m.joint_change) == len(joints_in_region(m.region)) for m in read)
    assert all(np.isfinite(m.joint_change).all() for m in read)
    assert measured["joint_head_progressed_before_index"].n_images <= measured["progressed_before_index"].n_images
