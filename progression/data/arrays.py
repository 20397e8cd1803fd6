"""A cohort as aligned arrays: visits in date order per patient, images, targets, covariates.

Built once per cohort (vectorised, no per-batch pandas work), then sliced per patient by
the datasets. Visits are sorted by patient and date and stored contiguously, so patient
``p`` owns visit rows ``patient_start[p]:patient_start[p + 1]``. Each visit has at most one
image per region (the first listed in images.csv; later duplicates are ignored with a
warning). Times are years (days / 365.25).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from progression.cohort import Cohort
from progression.columns import DAYS_PER_YEAR, SCORE_COLUMNS
from progression.data.covariates import CovariateSpec
from progression.scoring import JOINTS, REGIONS, aggregate_joint_scores, joints_in_region

logger = logging.getLogger(__name__)

AGE_COLUMN = "age_at_visit"  # derived from patients.csv birth_date when given (years)
N_REGIONS = len(REGIONS)
MAX_JOINTS = max(len(joints_in_region(r)) for r in REGIONS)
# (region index, position within the region) of every joint name.
JOINT_SLOT: dict[str, tuple[int, int]] = {
    j.name: (REGIONS.index(j.region), [k.name for k in joints_in_region(j.region)].index(j.name))
    for j in JOINTS
}


@dataclass
class CohortArrays:
    """Everything the datasets need, as numpy arrays aligned by patient / visit / image row."""

    patient_ids: np.ndarray  # [P] str
    patient_start: np.ndarray  # [P + 1] offsets into the visit arrays
    visit_date: np.ndarray  # [V] datetime64[D]
    years: np.ndarray  # [V] years since the patient's first visit
    gap: np.ndarray  # [V] years since the previous visit (0 at the first)
    obs: np.ndarray  # [V, 3] observed total/erosion/JSN (SvdH units), NaN = not scored
    region_target: np.ndarray  # [V, R, 2] region erosion/JSN (units), NaN = not scored
    joint_target: np.ndarray  # [V, R, MAX_JOINTS, 2] joint grades, NaN = not scored
    image_index: np.ndarray  # [V, R] image row or -1
    prev_index: np.ndarray  # [V, R] image row of the same region at an earlier visit, or -1
    prev_gap: np.ndarray  # [V, R] years back to that visit
    first_index: np.ndarray  # [V, R] image row of the region's first visit, or -1
    first_gap: np.ndarray  # [V, R]
    image_path: list[str]  # [N] absolute paths
    image_region: np.ndarray  # [N] region index
    image_visit: np.ndarray  # [N] visit row
    visit_cov: dict[str, np.ndarray]  # visit_num, visit_num_mask [V, k]; visit_cat [V, c]
    static_cov: dict[str, np.ndarray]  # static_num, static_num_mask [P, k]; static_cat [P, c]

    @property
    def n_patients(self) -> int:
        return len(self.patient_ids)

    def visits_of(self, p: int) -> slice:
        return slice(int(self.patient_start[p]), int(self.patient_start[p + 1]))


def covariate_columns(cohort: Cohort) -> tuple[list[str], list[str]]:
    """(static, per-visit) covariate names of a cohort, from its schema."""
    schema = cohort.schema
    static = [*schema.static_numeric, *schema.static_categorical]
    per_visit = [*schema.visit_numeric, *schema.visit_categorical]
    if "birth_date" in cohort.patients.columns and "age" not in static + per_visit:
        per_visit.append(AGE_COLUMN)
    return static, per_visit


def visits_with_derived(cohort: Cohort) -> pd.DataFrame:
    """visits.csv plus derived covariates (age at the visit from birth_date)."""
    visits = cohort.visits.copy()
    visits["visit_date"] = pd.to_datetime(visits["visit_date"])
    if "birth_date" in cohort.patients.columns:
        birth = cohort.patients.set_index("patient_id")["birth_date"]
        born = pd.to_datetime(visits["patient_id"].map(birth))
        visits[AGE_COLUMN] = (visits["visit_date"] - born).dt.days / DAYS_PER_YEAR
    return visits


def fit_covariates(cohort: Cohort) -> CovariateSpec:
    """Covariate statistics from ``cohort`` (pass the training split only).

    Which covariates are categorical is the cohort schema's decision (made once, when the
    cohort is read); the derived age is numeric.
    """
    static, per_visit = covariate_columns(cohort)
    categorical = {*cohort.schema.static_categorical, *cohort.schema.visit_categorical}
    return CovariateSpec.fit(cohort.patients, visits_with_derived(cohort), static, per_visit,
                             categorical)


def _visit_scores(cohort: Cohort, visits: pd.DataFrame, targets: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed totals, region sums and joint grades per visit row (NaN where not scored).

    ``targets`` False (prediction): only the totals are needed, so joint scores are read just
    for visits whose totals they fill, and region sums and joint grades stay NaN.
    """
    v = len(visits)
    obs = np.full((v, 3), np.nan, dtype=np.float32)
    for k, col in enumerate(SCORE_COLUMNS):
        if col in visits.columns:
            obs[:, k] = pd.to_numeric(visits[col], errors="coerce").to_numpy(dtype=np.float32)
    region = np.full((v, N_REGIONS, 2), np.nan, dtype=np.float32)
    joint = np.full((v, N_REGIONS, MAX_JOINTS, 2), np.nan, dtype=np.float32)
    js = cohort.joint_scores
    if js is None or js.empty:
        return obs, region, joint
    key = pd.MultiIndex.from_frame(visits[["patient_id", "visit_date"]])
    js = js.copy()
    js["visit_date"] = pd.to_datetime(js["visit_date"])
    if not targets:
        unscored = key[np.isnan(obs).any(1)]
        js = js[pd.MultiIndex.from_frame(js[["patient_id", "visit_date"]]).isin(unscored)]
        if js.empty:
            return obs, region, joint
    agg = aggregate_joint_scores(js)
    agg["visit_date"] = pd.to_datetime(agg["visit_date"])
    agg = agg.set_index(["patient_id", "visit_date"]).reindex(key)
    # A total in visits.csv wins; complete joint scores fill visits scored only per joint.
    for k, col in enumerate(SCORE_COLUMNS):
        fill = agg[col].to_numpy(dtype=np.float32)
        obs[:, k] = np.where(np.isnan(obs[:, k]), fill, obs[:, k])
    if not targets:
        return obs, region, joint
    for r, name in enumerate(REGIONS):
        region[:, r, 0] = agg[f"{name}_erosion"].to_numpy(dtype=np.float32)
        region[:, r, 1] = agg[f"{name}_jsn"].to_numpy(dtype=np.float32)
    row = pd.Series(np.arange(v), index=key)
    rows = row.reindex(pd.MultiIndex.from_frame(js[["patient_id", "visit_date"]])).to_numpy()
    ok = ~np.isnan(rows.astype(float))
    slot_region = js["joint"].map({name: r for name, (r, _) in JOINT_SLOT.items()})
    slot_joint = js["joint"].map({name: j for name, (_, j) in JOINT_SLOT.items()})
    rows = rows[ok].astype(np.int64)
    slot_region = slot_region.to_numpy(dtype=np.int64)[ok]
    slot_joint = slot_joint.to_numpy(dtype=np.int64)[ok]
    joint[rows, slot_region, slot_joint, 0] = js["erosion"].to_numpy(dtype=np.float32)[ok]
    joint[rows, slot_region, slot_joint, 1] = js["jsn"].to_numpy(dtype=np.float32)[ok]
    return obs, region, joint


def truncate_visits(
    visits: pd.DataFrame, images: pd.DataFrame, index_dates: Mapping[str, object] | None
) -> pd.DataFrame:
    """Each patient's visits up to the index visit: the last visit on or before the patient's
    index date (if given) that has at least one image, or the last such visit when none has."""
    if index_dates is not None:
        limit = pd.to_datetime(visits["patient_id"].map(dict(index_dates)))
        visits = visits[limit.isna() | (visits["visit_date"] <= limit)]
    imaged = visits.set_index(["patient_id", "visit_date"]).index.isin(
        pd.MultiIndex.from_frame(images[["patient_id", "visit_date"]])
    )
    last_any = visits.groupby("patient_id")["visit_date"].transform("max")
    last_imaged = visits["visit_date"].where(imaged).groupby(visits["patient_id"]).transform("max")
    index_date = last_imaged.fillna(last_any)
    return visits[visits["visit_date"] <= index_date]


def build_arrays(
    cohort: Cohort,
    spec: CovariateSpec,
    use_images: bool = True,
    index_dates: Mapping[str, object] | None = None,
    truncate_to_index: bool = False,
    drop_images: set[str] | None = None,
    targets: bool = True,
) -> CohortArrays:
    """Arrays for every patient of ``cohort`` (patients without visits get none).

    ``truncate_to_index`` keeps visits up to each patient's index visit (prediction);
    training keeps all visits. ``drop_images`` are absolute paths to leave out (unreadable).
    ``targets`` False (prediction) leaves ``region_target`` and ``joint_target`` NaN, which
    saves aggregating every joint score; ``obs`` is the same either way.
    """
    visits = visits_with_derived(cohort)
    images = cohort.images.copy()
    images["visit_date"] = pd.to_datetime(images["visit_date"])
    images = images[images["region"].isin(REGIONS)]
    if drop_images:
        images = images[~images["abs_path"].isin(drop_images)]
    if not use_images:
        images = images.iloc[0:0]
    if truncate_to_index:
        visits = truncate_visits(visits, images, index_dates)
    patient_ids = cohort.patients["patient_id"].astype(str).to_numpy()
    order = {p: i for i, p in enumerate(patient_ids)}
    visits = visits[visits["patient_id"].isin(order)].copy()
    visits["_p"] = visits["patient_id"].map(order)
    visits = visits.sort_values(["_p", "visit_date"], kind="stable").reset_index(drop=True)
    counts = np.bincount(visits["_p"].to_numpy(dtype=np.int64), minlength=len(patient_ids))
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    first = visits.groupby("_p")["visit_date"].transform("min")
    years = ((visits["visit_date"] - first).dt.days / DAYS_PER_YEAR).to_numpy(dtype=np.float32)
    gap = np.diff(years, prepend=0.0).astype(np.float32)
    gap[start[:-1][counts > 0]] = 0.0
    obs, region_target, joint_target = _visit_scores(cohort, visits, targets)

    # Images -> visit rows; one per (visit, region).
    visit_row = pd.Series(np.arange(len(visits)),
                          index=pd.MultiIndex.from_frame(visits[["patient_id", "visit_date"]]))
    images["_v"] = visit_row.reindex(
        pd.MultiIndex.from_frame(images[["patient_id", "visit_date"]])).to_numpy()
    images = images[images["_v"].notna()].copy()
    images["_v"] = images["_v"].astype(np.int64)
    images["_r"] = images["region"].map(REGIONS.index).astype(np.int64)
    dup = images.duplicated(["_v", "_r"], keep="first")
    if dup.any():
        logger.warning("%d images duplicate a (visit, region) already listed; the first is used",
                       int(dup.sum()))
        images = images[~dup]
    images = images.sort_values(["_v", "_r"]).reset_index(drop=True)
    image_index = np.full((len(visits), N_REGIONS), -1, dtype=np.int64)
    image_index[images["_v"].to_numpy(), images["_r"].to_numpy()] = np.arange(len(images))

    prev_index, prev_gap, first_index, first_gap = _history(image_index, years, start)
    return CohortArrays(
        patient_ids=patient_ids,
        patient_start=start,
        visit_date=visits["visit_date"].to_numpy().astype("datetime64[D]"),
        years=years,
        gap=gap,
        obs=obs,
        region_target=region_target,
        joint_target=joint_target,
        image_index=image_index,
        prev_index=prev_index,
        prev_gap=prev_gap,
        first_index=first_index,
        first_gap=first_gap,
        image_path=images["abs_path"].astype(str).tolist(),
        image_region=images["_r"].to_numpy(),
        image_visit=images["_v"].to_numpy(),
        visit_cov=spec.transform_visits(visits),
        static_cov=spec.transform_static(cohort.patients),
    )


def _history(image_index: np.ndarray, years: np.ndarray, start: np.ndarray):
    """For every visit and region: the same region's image at the previous and at the first
    earlier visit that has one (-1 if none) and the years back to it.

    Per-patient shifts and forward fills over all visits at once (a Python loop over
    visits took seconds for 10,000 patients).
    """
    patient = np.repeat(np.arange(len(start) - 1), np.diff(start))
    has = image_index >= 0
    index = pd.DataFrame(np.where(has, image_index, np.nan))
    when = pd.DataFrame(np.where(has, years[:, None], np.nan))

    def last_before(frame: pd.DataFrame) -> np.ndarray:
        return frame.groupby(patient).shift(1).groupby(patient).ffill().to_numpy()

    prev, prev_t = last_before(index), last_before(when)
    seen = ~np.isnan(prev)  # an earlier visit has this region's film (so the first one too)
    first = index.groupby(patient).transform("first").to_numpy()
    first_t = when.groupby(patient).transform("first").to_numpy()
    prev_index = np.where(seen, prev, -1).astype(np.int64)
    first_index = np.where(seen, first, -1).astype(np.int64)
    prev_gap = np.where(seen, years[:, None] - prev_t, 0.0).astype(np.float32)
    first_gap = np.where(seen, years[:, None] - first_t, 0.0).astype(np.float32)
    return prev_index, prev_gap, first_index, first_gap
