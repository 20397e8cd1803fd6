"""Forecasts for every patient of a cohort: encode each film once, then run the sequence model.

``predict_cohort(checkpoint, data)`` returns the predictions table of docs/architecture.md:
one row per patient x horizon with columns :data:`PREDICTION_COLUMNS`. It needs no scores
at all: films and covariates are enough, and a patient without any usable film still gets a
forecast from covariates (and any observed scores), flagged in ``note``. Observed scores,
where a cohort has them, are used as inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import special

from progression.calibration import with_note
from progression.cohort import Cohort, ImageCache, read_cohort
from progression.columns import PREDICTION_COLUMNS
from progression.data.arrays import CohortArrays, build_arrays
from progression.data.datasets import GroupedBatchSampler, SequenceDataset, collate_sequences
from progression.errors import CheckpointError, ConfigError
from progression.models.forecaster import Forecaster
from progression.trained import TrainedModel, load_trained

logger = logging.getLogger(__name__)

NOTE_NO_IMAGE = "no usable image: covariates only"
NOTE_NO_VISIT = "no visit before the index date: covariates only"
NOTE_UNCALIBRATED = "interval not calibrated (the checkpoint holds no conformal calibration)"
NOTE_SCORED_ONLY = ("interval calibrated on scored histories only; this history has no "
                    "scored visit")


def _index_dates(index_dates: Any) -> dict[str, pd.Timestamp] | None:
    """Mapping / Series ``patient_id -> date`` or a frame with ``patient_id, index_date``."""
    if index_dates is None:
        return None
    if isinstance(index_dates, pd.DataFrame):
        if not {"patient_id", "index_date"} <= set(index_dates.columns):
            raise ConfigError("index_dates: a DataFrame needs columns patient_id and index_date")
        index_dates = index_dates.drop_duplicates("patient_id").set_index("patient_id")["index_date"]
    series = pd.Series(dict(index_dates) if isinstance(index_dates, Mapping) else index_dates)
    series.index = series.index.astype(str)
    try:
        return pd.to_datetime(series).to_dict()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"index_dates: dates must be YYYY-MM-DD ({exc})") from None


def predict_cohort(
    checkpoint: str | Path | TrainedModel,
    data: str | Path | Cohort,
    horizons: Sequence[float] = (1.0, 2.0),
    index_dates: Mapping[str, Any] | pd.Series | pd.DataFrame | None = None,
    batch_size: int = 64,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    calibrate: bool = True,
) -> pd.DataFrame:
    """Forecast every patient of ``data`` (a cohort directory or :class:`Cohort`).

    ``checkpoint``: a .ckpt path, an MLflow model URI (see
    :func:`~progression.trained.resolve_checkpoint`) or a model already loaded by
    :func:`~progression.trained.load_trained`.
    ``horizons``: years after the index date. ``index_dates``: per-patient forecast origin;
    the history is cut there (visits after it are not seen) and the index visit is the last
    visit on or before it with a film (default: each patient's last such visit).
    ``batch_size``: patients per sequence batch (films are encoded 4x that many at a time).
    ``cache_dir``: decoded-image cache (default: the training config's, else the default).
    ``calibrate``: apply the checkpoint's conformal interval correction
    (:mod:`progression.calibration`; False gives the raw quantile-head interval): the one
    fitted on scored histories where the patient's history up to the index date has a scored
    visit, the one fitted with scores hidden where it has none. A checkpoint without any
    calibration gives the raw interval, a logged warning and a ``note`` on every row.
    Returns one row per patient x horizon (:data:`PREDICTION_COLUMNS`) in the units of the
    checkpoint's scoring system (SvdH, or Larsen for a model trained on a Larsen cohort; the
    frame's ``attrs["scoring"]`` names it), ``risk_score`` in those units/year.
    """
    horizons = tuple(float(h) for h in horizons)
    if not horizons or any(not np.isfinite(h) or h <= 0 for h in horizons):
        raise ConfigError(f"horizons must be positive numbers of years, got {horizons}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    trained = load_trained(checkpoint, tracking_uri)
    cfg, model, spec = trained.config, trained.model, trained.covariates
    cohort = data if isinstance(data, Cohort) else read_cohort(data)
    _check_same_system(trained, cohort)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    if device.type == "cuda" and model.encoder is not None:
        model.encoder.to(memory_format=torch.channels_last)  # faster bf16 convolutions
    dates = _index_dates(index_dates)
    # targets=False: forecasts read observed totals only, not per-region/joint targets.
    arrays = build_arrays(cohort, spec, cfg.model.use_images, dates, truncate_to_index=True,
                          targets=False)
    feats, skipped = None, {}
    if model.encoder is not None and arrays.image_path:
        cache = ImageCache(cfg.data.cache_dir if cache_dir is None else cache_dir, cfg.data.image_size)
        slots = cache.ensure(arrays.image_path, progress=progress, skip_bad=True)
        if (slots < 0).any():
            bad = {p for p, s in zip(arrays.image_path, slots) if s < 0}
            skipped = cohort.images[cohort.images["abs_path"].isin(bad)].groupby("patient_id").size().to_dict()
            arrays = build_arrays(cohort, spec, True, dates, truncate_to_index=True,
                                  drop_images=bad, targets=False)
            slots = slots[slots >= 0]
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        feats = model.encode_films(cache, slots, arrays.image_region, np.arange(len(slots)),
                                   device, 4 * batch_size, bf16, progress)
    frame = forecast_arrays(model, arrays, feats, horizons, batch_size, device, skipped)
    frame = calibrate_forecasts(frame, trained, arrays) if calibrate else frame
    frame.attrs["scoring"] = trained.meta.scoring
    return frame


def calibrate_forecasts(frame: pd.DataFrame, trained: TrainedModel, arrays: CohortArrays) -> pd.DataFrame:
    """``frame`` with each row's interval corrected for the regime of its patient's history
    (scored visit up to the index date or not); noted and warned where nothing is stored."""
    scored_cal, unscored_cal = trained.calibration, trained.calibration_unscored
    if scored_cal is None:
        logger.warning(
            "%s holds no interval calibration: delta_svdh_lo/hi are the raw quantile-head "
            "interval, often too narrow (every row's note says so); predict with the best.ckpt "
            "of a finished `progression train`, which calibrates it on its calibration "
            "patients (data.val_fraction, data.calibration_share)", trained.path.name)
        return with_note(frame, np.ones(len(frame), dtype=bool), NOTE_UNCALIBRATED)
    # arrays hold each history cut at its index date: a scored visit in it is one predict sees
    owner = np.repeat(np.arange(arrays.n_patients), np.diff(arrays.patient_start))
    scored_visits = np.bincount(owner, weights=~np.isnan(arrays.obs[:, 0]),
                                minlength=arrays.n_patients)
    scored = frame["patient_id"].map(dict(zip(arrays.patient_ids.astype(str), scored_visits > 0)))
    scored = scored.fillna(False).to_numpy(dtype=bool)
    if unscored_cal is None:  # calibrated before the unscored regime existed: as before
        return with_note(scored_cal.apply(frame), ~scored, NOTE_SCORED_ONLY)
    parts = [cal.apply(frame[rows]) for cal, rows in ((scored_cal, scored),
                                                      (unscored_cal, ~scored)) if rows.any()]
    return pd.concat(parts).loc[frame.index] if parts else frame


def _check_same_system(trained: TrainedModel, cohort: Cohort) -> None:
    """A model reads observed totals as input: they must be in the units it was trained on."""
    model, given = trained.meta.system, cohort.system
    if model.name != given.name and cohort.visits["svdh_total"].notna().any():
        raise CheckpointError(
            f"{trained.path.name} was trained on {model.label} scores ({model.unit}) but the "
            f"cohort's scores are {given.label} ({given.total_column}); forecast a cohort scored "
            f"in {model.label} (cohort.yaml 'scoring: {model.name}', docs/scoring.md) or one "
            "without scores"
        )


@torch.inference_mode()
def forecast_arrays(model: Forecaster, arrays: CohortArrays, feats: torch.Tensor | None,
                    horizons: Sequence[float], batch_size: int = 64,
                    device: torch.device | str = "cpu",
                    skipped: Mapping[str, int] | None = None) -> pd.DataFrame:
    """The predictions table (:data:`PREDICTION_COLUMNS`) from arrays already built.

    ``arrays``: :func:`~progression.data.arrays.build_arrays` cut at the index visit
    (``truncate_to_index=True``); ``feats``: the films' feature table from
    :meth:`~progression.models.forecaster.Forecaster.encode_films` (None for a
    covariates-only model); ``horizons``: years after the index date; ``batch_size``:
    patients per sequence batch; ``skipped``: unreadable films per patient id, named in
    ``note``. The model must already be on ``device``. No calibration is applied: that is
    the caller's step (:attr:`~progression.trained.TrainedModel.calibration`).
    """
    device = torch.device(device)
    skipped = dict(skipped or {})
    dataset = SequenceDataset(arrays, np.arange(arrays.n_patients))
    sampler = GroupedBatchSampler(dataset.lengths(), batch_size, shuffle=False)
    chunks: list[dict[str, np.ndarray]] = []
    for idx in sampler:
        batch = collate_sequences([dataset[i] for i in idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model.sequence(feats, batch)
        rows = torch.arange(len(idx), device=device)
        last = batch["length"] - 1
        state = out["state"][rows, last]
        current = torch.expm1(out["current_log"][rows, last, 0].float()).clamp(min=0).cpu().numpy()
        imaged = (batch["image_index"][rows] >= 0).any(-1).any(-1).cpu().numpy()
        for h in horizons:
            pair = model.sequence.pair_outputs(state, torch.full((len(idx),), h, device=device))
            chunks.append({"patient": dataset.patients[idx], "horizon": np.full(len(idx), h),
                           "current": current, "imaged": imaged,
                           **{k: v.float().cpu().numpy() for k, v in pair.items()}})
    if not chunks:
        return pd.DataFrame({c: [] for c in PREDICTION_COLUMNS}, columns=PREDICTION_COLUMNS)
    # The table is built column by column for the whole cohort: no Python work per patient.
    c = {k: np.concatenate([chunk[k] for chunk in chunks]) for k in chunks[0]}
    p = c["patient"]
    has_visit = np.diff(arrays.patient_start)[p] > 0
    index_visit = np.maximum(arrays.patient_start[p + 1] - 1, 0)
    dates = (np.datetime_as_string(arrays.visit_date[index_visit], unit="D").astype(object)
             if len(arrays.visit_date) else np.full(len(p), None))
    patient_id = arrays.patient_ids[p].astype(str).astype(object)
    no_image = (model.encoder is not None) & ~c["imaged"]
    note = np.where(~has_visit, NOTE_NO_VISIT, np.where(no_image, NOTE_NO_IMAGE, "")).astype(object)
    for k in np.flatnonzero(pd.Series(patient_id).map(skipped).fillna(0).to_numpy() > 0):
        note[k] = "; ".join(filter(None, [note[k], f"{skipped[patient_id[k]]} unreadable image(s) skipped"]))
    delta = c["delta"].astype(np.float64)
    frame = pd.DataFrame({
        "patient_id": patient_id,
        "index_date": np.where(has_visit, dates, None),
        "horizon_years": c["horizon"].astype(np.float64),
        "svdh_index_pred": c["current"].astype(np.float64),
        "delta_svdh_pred": delta,
        "delta_svdh_lo": c["lo"].astype(np.float64),
        "delta_svdh_hi": c["hi"].astype(np.float64),
        "p_rapid": special.expit(c["rapid_logit"]).astype(np.float64),  # no overflow warning
        "risk_score": delta / c["horizon"],
        "note": note,
    }, columns=PREDICTION_COLUMNS)
    frame["_order"] = p  # rows of arrays.patient_ids: the cohort's patient order
    return (frame.sort_values(["_order", "horizon_years"], kind="stable")
            .drop(columns="_order").reset_index(drop=True))


def predict_frame(checkpoint: str | Path | TrainedModel, frame: pd.DataFrame,
                  horizons: Sequence[float] = (1.0, 2.0)) -> pd.DataFrame:
    """Forecasts from one table with a row per film (format-v1 column names).

    Columns: ``patient_id``, ``visit_date``, ``region``, ``path`` (absolute or relative to
    the working directory; empty = a visit without a film) and any covariates; the
    checkpoint's covariate list decides which are per patient and which per visit.
    """
    required = {"patient_id", "visit_date"}
    if not required <= set(frame.columns):
        raise ConfigError("model input needs a cohort_dir column, or patient_id, visit_date, "
                          "region and path columns (one row per film)")
    trained = load_trained(checkpoint)
    spec = trained.covariates
    frame = frame.copy()
    frame["patient_id"] = frame["patient_id"].astype(str)
    static = [c.name for c in spec.static_numeric + spec.static_categorical if c.name in frame]
    if "birth_date" in frame.columns:
        static.append("birth_date")
    per_visit = [c.name for c in spec.visit_numeric + spec.visit_categorical if c.name in frame]
    per_visit += [c for c in ("svdh_total", "svdh_erosion", "svdh_jsn") if c in frame.columns]
    patients = frame.groupby("patient_id", sort=False)[static].first().reset_index()
    visits = frame.groupby(["patient_id", "visit_date"], sort=False)[per_visit].first().reset_index()
    images = None
    if {"region", "path"} <= set(frame.columns):
        has = frame["path"].notna() & (frame["path"].astype(str).str.strip() != "")
        images = frame.loc[has, ["patient_id", "visit_date", "region", "path"]]
    cohort = Cohort.from_frames(patients, visits, images)
    return predict_cohort(trained, cohort, horizons=horizons, progress=False)
