"""Explain one patient's forecast with a trained checkpoint: the data behind the HTML report.

For the patient's history (up to the index visit, as ``predict`` sees it) this computes

- the forecast rows, exactly as ``progression predict`` writes them (calibrated interval);
- Grad-CAM maps over every film for the change forecast at ``explained_horizon`` (the whole
  sequence model is differentiated, so earlier films count through the change they show) and
  for the current-score head (the film's own damage reading);
- the per-joint head's reading of every film (SvdH units, :mod:`~progression.explain.joints`),
  when the checkpoint trained that head;
- per-visit effects: integrated gradients over each visit's inputs except the patient's static
  covariates, from an empty visit (SvdH units);
- covariate effects in SvdH units compared with an average patient of the training split:
  integrated gradients from the training mean for numeric covariates (standardised value 0),
  and for categorical ones the forecast with the patient's level minus the mean forecast over
  all training levels. A covariate that was not recorded has no effect.

Everything runs on the CPU: one patient is small, and attribution needs gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import torch

from progression.cohort import Cohort, read_cohort
from progression.columns import KNOWN_COVARIATES, KnownCovariate
from progression.data.covariates import MISSING_CODE, CovariateSpec
from progression.errors import CohortError
from progression.explain.attributions import integrated_gradients
from progression.explain.gradcam import finest_semantic_layer, grad_cam
from progression.explain.inputs import (
    ChangeFromFilms,
    DamageFromFilms,
    PatientInputs,
    change_forecast,
    load_patient,
    repeat_batch,
)
from progression.explain.joints import joint_readings
from progression.explain.report import CovariateEffect, PatientReport, RegionImage, VisitView
from progression.models.forecaster import Forecaster
from progression.predict import predict_cohort
from progression.scoring import REGIONS
from progression.trained import load_trained

logger = logging.getLogger(__name__)

def _features(model: Forecaster, patient: PatientInputs) -> torch.Tensor | None:
    if patient.images is None:
        return None
    with torch.no_grad():
        return model.image_features(model.encoder(patient.images, patient.regions))


def _visit_effects(model: Forecaster, patient: PatientInputs, feats: torch.Tensor | None,
                   horizon: float, steps: int) -> np.ndarray:
    """Integrated gradients over each visit's own inputs (static covariates held fixed)."""
    seq = model.sequence
    with torch.no_grad():
        x, _ = seq.visit_inputs(feats, patient.batch)  # [1, T, F]
    layout = seq.layout
    n_static = 2 * layout.n_static_num + sum(e.embedding_dim for e in seq.static_cat)
    baseline = x.clone()
    baseline[..., : x.shape[-1] - n_static] = 0.0  # an empty visit, same patient

    def fn(path: torch.Tensor) -> torch.Tensor:  # [S, 1, T, F] -> [S]
        replace = seq.input.register_forward_pre_hook(lambda _m, _a: (path[:, 0],))
        try:
            return change_forecast(model, feats, repeat_batch(patient.batch, path.shape[0]), horizon)
        finally:
            replace.remove()

    attr = integrated_gradients(fn, x, baseline, steps)[0]  # [T, F]
    return attr.sum(-1).numpy()


def _covariate_effects(model: Forecaster, spec: CovariateSpec, patient: PatientInputs,
                       feats: torch.Tensor | None, horizon: float,
                       steps: int) -> list[CovariateEffect]:
    batch = patient.batch
    effects: list[CovariateEffect] = []

    def forecast_with(key: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def fn(path: torch.Tensor) -> torch.Tensor:
            big = repeat_batch(batch, path.shape[0])
            big[key] = path[:, 0]
            return change_forecast(model, feats, big, horizon)
        return fn

    def shown(name: str, raw: object, latest: bool) -> tuple[str, str]:
        known = KNOWN_COVARIATES.get(name, KnownCovariate(name, name))
        if isinstance(raw, float):
            raw = round(raw, 4)  # undo float32 standardisation noise (1.0 -> 0.99999994)
        if known.words is not None and raw in (0.0, 1.0):
            text = known.words[int(raw)]
        else:
            text = f"{raw:.3g}" if isinstance(raw, float) else str(raw)
        text = f"{text} {known.report_unit}".strip()
        return known.label, text + (" (latest)" if latest else "")

    for key, group, per_visit in (
        ("static_num", spec.static_numeric, False),
        ("visit_num", spec.visit_numeric, True),
    ):
        if not group:
            continue
        x = batch[key]
        attr = integrated_gradients(forecast_with(key), x, torch.zeros_like(x), steps)[0]
        mask = batch[f"{key}_mask"][0]
        for k, cov in enumerate(group):
            if per_visit:
                seen = np.flatnonzero(mask[:, k].numpy() > 0)
                if not len(seen):
                    continue
                raw = float(x[0, seen[-1], k]) * cov.std + cov.mean
                effect = float(attr[:, k].sum())
            else:
                if mask[k] <= 0:
                    continue
                raw = float(x[0, k]) * cov.std + cov.mean
                effect = float(attr[k])
            effects.append(CovariateEffect(*shown(cov.name, raw, per_visit), effect))

    for key, group, per_visit in (
        ("static_cat", spec.static_categorical, False),
        ("visit_cat", spec.visit_categorical, True),
    ):
        for k, cov in enumerate(group):
            codes = batch[key][..., k]
            present = codes != MISSING_CODE
            if not bool(present.any()) or not cov.levels:
                continue
            trials = torch.arange(2, 2 + len(cov.levels))
            big = repeat_batch(batch, len(trials) + 1)
            column = big[key][..., k]
            column[1:] = torch.where(present, trials.view(-1, *([1] * (column.ndim - 1))), column[1:])
            with torch.no_grad():
                out = change_forecast(model, feats, big, horizon)
            effect = float(out[0] - out[1:].mean())
            last = int(codes.flatten()[present.flatten()][-1])
            level = cov.levels[last - 2] if last >= 2 else "not seen in training"
            effects.append(CovariateEffect(*shown(cov.name, level, per_visit), effect))
    return effects


def explain_patient(
    checkpoint: str | Path,
    data: str | Path | Cohort,
    patient_id: str,
    horizons: Sequence[float] = (1.0, 2.0),
    explained_horizon: float | None = None,
    steps: int = 32,
    cache_dir: str | Path | None = None,
) -> PatientReport:
    """Everything the report shows for ``patient_id`` of cohort ``data``.

    ``explained_horizon`` (years; default the first of ``horizons``) is the forecast the
    heatmaps and effects refer to; ``steps`` is the number of integrated-gradient steps.
    Raises CohortError when the patient is not in the cohort.
    """
    trained = load_trained(checkpoint)
    cfg, spec, meta = trained.config, trained.covariates, trained.meta
    model = trained.model.cpu().eval()
    cohort = data if isinstance(data, Cohort) else read_cohort(data)
    pid = str(patient_id)
    if pid not in set(cohort.patient_ids):
        where = cohort.root or "the cohort"
        raise CohortError(f"patient '{pid}' is not in {where}/patients.csv; give a patient_id "
                          "listed there (--patient)")
    one = cohort.subset([pid])
    horizon = float(explained_horizon if explained_horizon is not None else horizons[0])
    forecasts = predict_cohort(trained, one, horizons=horizons, progress=False,
                               cache_dir=cfg.data.cache_dir if cache_dir is None else cache_dir)
    patient = load_patient(model, spec, one, cfg.data.image_size,
                            cfg.data.cache_dir if cache_dir is None else cache_dir)
    feats = _features(model, patient)

    change_maps = damage_maps = None
    if patient.images is not None:
        layer = finest_semantic_layer(model.encoder.backbone, cfg.data.image_size)
        change_maps = grad_cam(ChangeFromFilms(model, patient, horizon), patient.images, layer)
        damage_maps = grad_cam(DamageFromFilms(model, patient.regions), patient.images, layer)
    with torch.no_grad():
        current = torch.expm1(model.sequence(feats, patient.batch)["current_log"][0, :, 0])
    a = patient.arrays
    n_visits = int(a.patient_start[1])
    effects = _visit_effects(model, patient, feats, horizon, steps) if n_visits else np.zeros(0)
    visits = []
    for v in range(n_visits):
        films = []
        for r, region in enumerate(REGIONS):
            row = int(a.image_index[v, r])
            if row < 0 or patient.images is None:
                continue
            films.append(RegionImage(region, patient.images[row].numpy(),
                                     change_maps[row], damage_maps[row]))
        observed = float(a.obs[v, 0])
        visits.append(VisitView(
            visit_date=str(a.visit_date[v]),
            observed_svdh=observed if np.isfinite(observed) else None,
            estimated_svdh=float(current[v]),
            contribution=float(effects[v]),
            images=films,
        ))
    calibration = meta.calibration
    # an untrained per-joint head reads noise: no map rather than a misleading one
    joint_head_trained = cfg.loss.joint > 0 and meta.encoder_trained and meta.joint_supervised
    return PatientReport(
        patient_id=pid,
        forecasts=forecasts,
        visits=visits,
        covariates=_covariate_effects(model, spec, patient, feats, horizon, steps),
        joints=joint_readings(model, patient) if joint_head_trained else None,
        interval_level=float(calibration["level"]) if calibration else cfg.model.interval_level,
        interval_calibrated=calibration is not None,
        explained_horizon=horizon,
        uses_images=model.encoder is not None,
        model_name=trained.name,
        generated_on=date.today().isoformat(),
        scoring=meta.scoring,
    )
