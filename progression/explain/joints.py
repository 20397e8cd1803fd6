"""Per-joint damage maps: the image encoder's per-joint head, read out in SvdH units.

Besides the region totals, the encoder reads every joint of a film (``joint_log``: log1p of
erosion and JSN, trained where the cohort has ``joint_scores.csv``). These readings say
*which* joints the model thinks are damaged, in the scale a reader uses, so a clinician can
check them against the film and the reader's own per-joint scores; a heatmap only says where
the model looked.

- :func:`joint_readings`: one row per joint of every film of a patient, with the reader's
  grade next to it where the cohort scored that joint at that visit;
- :func:`joint_change`: the change the head reads per joint between each region's first film
  and its film at the index visit (what the localisation check ranks joints by).

The head's readings are model output, not reader scores: a single joint is far noisier than a
region total, and a head trained without per-joint reader scores reads nothing meaningful.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from progression.scoring import REGIONS, joints_in_region

if TYPE_CHECKING:
    from progression.explain.inputs import PatientInputs
    from progression.models.forecaster import Forecaster

READING_COLUMNS = ["visit_date", "region", "joint", "erosion_pred", "jsn_pred",
                   "erosion_reader", "jsn_reader"]
CHANGE_COLUMNS = ["region", "joint", "first_date", "index_date", "erosion_change",
                  "jsn_change", "change"]


def joint_readings(model: Forecaster, patient: PatientInputs) -> pd.DataFrame:
    """The per-joint head's reading of every film of ``patient`` (from
    :func:`~progression.explain.inputs.load_patient`), in film order.

    Columns :data:`READING_COLUMNS`: ``visit_date`` (ISO text), ``region``, ``joint`` (SvdH
    name, ``hand_left_mcp2``), ``erosion_pred`` and ``jsn_pred`` (SvdH units: ``expm1`` of the
    head, clipped to the joint's 0-max grade, since a reading off the scale is no grade), and
    ``erosion_reader`` / ``jsn_reader`` (the cohort's ``joint_scores.csv``, NaN where not
    scored). A component SvdH does not score at a joint (JSN of the distal radius, erosion of
    cmc3) is 0: the head has an output there, but it was never trained and does not count
    towards any SvdH total. No films (or a covariates-only model): an empty table.
    """
    if patient.images is None or model.encoder is None:
        return pd.DataFrame(columns=READING_COLUMNS)
    with torch.no_grad():
        joint_log = model.encoder(patient.images, patient.regions)["joint_log"]
    units = torch.expm1(joint_log.float()).clamp(min=0).numpy()
    a = patient.arrays
    rows = []
    for film, (visit, region) in enumerate(zip(a.image_visit, a.image_region)):
        for j, joint in enumerate(joints_in_region(REGIONS[int(region)])):
            reader = a.joint_target[visit, region, j]
            rows.append((
                str(a.visit_date[visit]), joint.region, joint.name,
                float(min(units[film, j, 0], joint.erosion_max or 0)),
                float(min(units[film, j, 1], joint.jsn_max or 0)),
                float(reader[0]), float(reader[1]),
            ))
    return pd.DataFrame(rows, columns=READING_COLUMNS)


def joint_change(readings: pd.DataFrame) -> pd.DataFrame:
    """Per-joint change the head reads (SvdH units) between each region's first film and its
    film at the index visit (the latest date in ``readings``, a :func:`joint_readings` table).

    Columns :data:`CHANGE_COLUMNS`; ``change`` = erosion + JSN change. Regions without a film
    at the index visit, or whose first film is the index one, have no rows: there is no change
    to read. The first film of a region is its earliest, which is the patient's first visit
    unless that visit lacked the region's film.
    """
    if readings.empty:
        return pd.DataFrame(columns=CHANGE_COLUMNS)
    index_date = readings["visit_date"].max()
    first_date = readings.groupby("region")["visit_date"].transform("min")
    keys = ["region", "joint"]
    values = ["erosion_pred", "jsn_pred"]
    last = readings.loc[readings["visit_date"] == index_date, [*keys, *values]]
    first = readings.loc[(readings["visit_date"] == first_date) & (first_date < index_date),
                         [*keys, "visit_date", *values]]
    both = first.merge(last, on=keys, suffixes=("_first", "_index"))
    erosion = both["erosion_pred_index"] - both["erosion_pred_first"]
    jsn = both["jsn_pred_index"] - both["jsn_pred_first"]
    return pd.DataFrame({
        "region": both["region"], "joint": both["joint"], "first_date": both["visit_date"],
        "index_date": index_date, "erosion_change": erosion, "jsn_change": jsn,
        "change": erosion + jsn,
    }, columns=CHANGE_COLUMNS).reset_index(drop=True)


def reader_total(erosion: pd.Series, jsn: pd.Series) -> pd.Series:
    """A reader's erosion + JSN per joint; NaN only where neither component was scored (an
    erosion-only joint has no JSN grade, and that is not a missing score)."""
    total = erosion.fillna(0.0) + jsn.fillna(0.0)
    return total.where(erosion.notna() | jsn.notna(), np.nan)
