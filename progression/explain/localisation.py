"""Do the heatmaps land on the joints that truly changed? A check on simulated cohorts.

The simulator writes, under ``<cohort>/truth/``, the true erosion/JSN grade of every joint at
every visit (``joint_truth.csv``) and where each joint lies in each film
(``joint_locations.csv``: ``path, joint, x, y`` as fractions of the film's width and height).
For the films of each patient's index visit (the last one the forecast sees) this computes
Grad-CAM maps, the share of each map inside a window around each joint (in the square,
padded frame the model sees), and the top-k hit rate against three kinds of truth:

- ``progressed_before_index`` (forecast maps): joints whose true grade rose between the
  patient's first visit and the index visit, i.e. the change the films show;
- ``progresses_next_year`` (forecast maps): joints whose true grade rises in the year after
  the index (what the forecast is about, but not yet visible);
- ``damaged_at_index`` (damage maps): joints with any true damage at the index visit.

A second way to rank the joints of a film needs no heatmap: the encoder's per-joint head
reads each joint's damage, so the change it reads between the region's first film and the
index film (:func:`progression.explain.joints.joint_change`) ranks joints directly:

- ``joint_head_progressed_before_index``: joints ranked by that change vs the same truth as
  ``progressed_before_index``, on the same films (those whose region was filmed before).

Each comes with the exact hit rate of k joints drawn at random from the same film.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from progression.cohort import Cohort
from progression.errors import CohortError
from progression.explain.attributions import (
    DEFAULT_WINDOW,
    HitRate,
    hit_rate,
    joint_mass,
    progressing_joints,
)
from progression.explain.gradcam import finest_semantic_layer, grad_cam
from progression.explain.inputs import ChangeFromFilms, DamageFromFilms, load_patient
from progression.explain.joints import joint_change, joint_readings
from progression.scoring import REGIONS
from progression.trained import load_trained


@dataclass
class FilmHeatmaps:
    """Grad-CAM maps of one film as the model saw it (``[size, size]``, >= 0), and the change
    the per-joint head reads on it."""

    patient_id: str
    visit_date: str
    region: str
    path: str  # absolute path of the film
    change: np.ndarray  # for the change forecast at the explained horizon
    damage: np.ndarray  # for the film's own damage reading
    # per-joint head: erosion + JSN change (SvdH units) since the region's first film, by
    # joint name; None when this is the region's first film
    joint_change: pd.Series | None = None


def index_film_heatmaps(
    checkpoint: str | Path,
    cohort: Cohort,
    patient_ids: Sequence[str],
    horizon: float = 1.0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Iterator[FilmHeatmaps]:
    """Heatmaps and per-joint change of the index-visit films of each patient (patients
    without films are skipped)."""
    from tqdm.auto import tqdm

    trained = load_trained(checkpoint)
    cfg, spec = trained.config, trained.covariates
    model = trained.model.cpu().eval()
    if model.encoder is None:
        raise CohortError(f"{trained.path}: a covariates-only model has no image heatmaps")
    layer = finest_semantic_layer(model.encoder.backbone, cfg.data.image_size)
    cache = cfg.data.cache_dir if cache_dir is None else cache_dir
    for pid in tqdm(list(patient_ids), desc="heatmaps", unit="patient", disable=not progress):
        patient = load_patient(model, spec, cohort.subset([pid]), cfg.data.image_size, cache)
        if patient.images is None:
            continue
        a = patient.arrays
        last = int(a.patient_start[1]) - 1
        rows = [int(r) for r in a.image_index[last] if r >= 0]
        if not rows:
            continue
        change = grad_cam(ChangeFromFilms(model, patient, horizon), patient.images, layer)
        damage = grad_cam(DamageFromFilms(model, patient.regions), patient.images, layer)
        read = joint_change(joint_readings(model, patient)).groupby("region")
        by_region = {region: group.set_index("joint")["change"] for region, group in read}
        for row in rows:
            region = REGIONS[int(a.image_region[row])]
            yield FilmHeatmaps(pid, str(a.visit_date[last]), region, a.image_path[row],
                               change[row], damage[row], by_region.get(region))


def square_frame(locations: pd.DataFrame, height: int, width: int, size: int) -> pd.DataFrame:
    """Joint positions (fractions of a ``height`` x ``width`` film) in the ``size`` x ``size``
    frame of :func:`progression.cohort.load_image` (longest side resized, centred padding)."""
    scale = size / max(height, width)
    nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (size - nh) // 2, (size - nw) // 2
    return locations.assign(x=(left + locations["x"] * nw) / size,
                            y=(top + locations["y"] * nh) / size)


def film_shape(path: str) -> tuple[int, int]:
    """(height, width) in pixels of a film as written (before resizing)."""
    from progression.cohort.images import decode_image

    return decode_image(path)[0].shape


def _grades(joint_truth: pd.DataFrame, pid: str, date: str) -> pd.Series:
    rows = joint_truth[(joint_truth["patient_id"] == pid) & (joint_truth["visit_date"] == date)]
    return (rows["erosion"].fillna(0) + rows["jsn"].fillna(0)).set_axis(rows["joint"])


def localisation_hit_rates(
    films: Iterable[FilmHeatmaps],
    data: str | Path,
    image_size: int,
    k: int = 3,
    half_width: float = DEFAULT_WINDOW,
    horizon: float = 1.0,
    seed: int = 0,
) -> dict[str, HitRate]:
    """Top-k joint hit rates of index-film heatmaps and of the per-joint head's change on the
    simulated cohort ``data`` (see module).

    ``films``: e.g. :func:`index_film_heatmaps` of a checkpoint, maps ``[image_size,
    image_size]`` in the padded square frame. Raises CohortError when ``data`` has no
    ``truth/joint_truth.csv``, ``joint_locations.csv`` and ``followup.csv`` (not a simulated
    cohort with rendered films).
    """
    root = Path(data)
    truth_dir = root / "truth"
    needed = [truth_dir / "joint_truth.csv", truth_dir / "joint_locations.csv", truth_dir / "followup.csv"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise CohortError(f"{', '.join(missing)} not found: the joint hit rate needs a simulated "
                          "cohort with rendered images (progression simulate)")
    joint_truth = pd.read_csv(needed[0], dtype={"patient_id": str})
    locations = pd.read_csv(needed[1])
    locations["abs_path"] = [str((root / p).resolve()) for p in locations["path"]]
    followup = pd.read_csv(needed[2], dtype={"patient_id": str})
    next_year = followup[np.isclose(followup["years_from_index"], horizon)]
    next_date = dict(zip(next_year["patient_id"], next_year["visit_date"]))
    first_date = joint_truth[joint_truth["kind"] == "history"].groupby("patient_id")["visit_date"].min()

    by_kind: dict[str, tuple[list[pd.Series], list[set[str]]]] = {
        name: ([], []) for name in ("progressed_before_index", "progresses_next_year",
                                    "damaged_at_index", "joint_head_progressed_before_index")
    }
    by_path = dict(tuple(locations.groupby("abs_path")))
    for film in films:
        where = by_path.get(str(Path(film.path).resolve()))
        if where is None:
            continue
        where = square_frame(where, *film_shape(film.path), image_size)
        change = joint_mass(film.change, where, half_width)
        damage = joint_mass(film.damage, where, half_width)
        pid, index = film.patient_id, film.visit_date
        truths = {
            "progressed_before_index": progressing_joints(joint_truth, pid, first_date.get(pid, index), index),
            "progresses_next_year": progressing_joints(joint_truth, pid, index, next_date.get(pid, index)),
        }
        grades = _grades(joint_truth, pid, index)
        truths["damaged_at_index"] = set(grades.index[grades > 0])
        for name, truth in truths.items():
            masses, sets = by_kind[name]
            masses.append(damage if name == "damaged_at_index" else change)
            sets.append(truth)
        if film.joint_change is not None:
            masses, sets = by_kind["joint_head_progressed_before_index"]
            masses.append(film.joint_change)
            sets.append(truths["progressed_before_index"])
    return {name: hit_rate(m, s, k=k, seed=seed) for name, (m, s) in by_kind.items()}
