"""After a fit: calibrate the interval, write the model card, log artifacts and the model.

Runs on rank 0 once training has ended, on the final checkpoint (best by ``train.monitor``,
else last): conformal interval correction on the calibration patients, stored in it and in
``last.ckpt`` (:func:`calibrate_checkpoint`, :mod:`progression.calibration`), ``MODEL_CARD.md``
next to the run's checkpoints, then config (redacted), card, checkpoint and the MLflow pyfunc
model logged to the run (the split too with ``tracking.share_identifiers=true``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from progression.calibration import (
    OBSERVED_COLUMN,
    CalibrationError,
    ConformalCalibration,
    fit_preferred,
)
from progression.cohort import Cohort
from progression.config import Config
from progression.data.horizons import LANDMARK_TOLERANCE_YEARS
from progression.data.outcomes import NoObservedOutcomes, OutcomeRule, landmark_outcomes
from progression.io import atomic_open, atomic_write_csv, atomic_write_text
from progression.models.checkpoint import META_KEY, checkpoint_meta, read_checkpoint
from progression.predict import predict_cohort
from progression.pyfunc_model import log_pyfunc_model
from progression.tracking import redact_config
from progression.train.model_card import write_checkpoint_card
from progression.train.validation import validation_subgroups

logger = logging.getLogger(__name__)


def finalize(cfg: Config, final: Path, cohort: Cohort, split: dict[str, list[str]],
             out_dir: Path, client: Any, run_id: str, uri: str,
             metrics: dict[str, float]) -> str | None:
    """Calibrate ``final`` (and ``last.ckpt``) on the calibration split, write and log the
    model card, config (redacted), checkpoint and, with ``tracking.share_identifiers``, the
    split to MLflow run ``run_id``; returns the logged pyfunc model's URI (None with
    ``tracking.log_model: false``)."""
    # conformal interval correction on patients neither trained on nor chosen on, in every
    # checkpoint a user may predict with: the final one and last.ckpt beside it
    for checkpoint in dict.fromkeys(c for c in (final, final.with_name("last.ckpt")) if c.is_file()):
        calibrate_checkpoint(checkpoint, cohort, split.get("calibration", []),
                             level=cfg.model.interval_level, cache_dir=cfg.data.cache_dir)
    subgroups = validation_subgroups(final, cohort, [*split["val"], *split.get("calibration", [])],
                                     cache_dir=cfg.data.cache_dir)
    card = write_checkpoint_card(final, out_dir / "MODEL_CARD.md", metrics=metrics,
                                 subgroups=subgroups)
    client.log_artifact(run_id, str(card))
    share = cfg.tracking.share_identifiers
    # config.yaml beside the checkpoints keeps the paths as given (fit wrote it, for a resume
    # here); the run gets the redacted form (paths cut, credentials hidden).
    with tempfile.TemporaryDirectory() as tmp:
        logged = Path(tmp) / "config.yaml"
        atomic_write_text(logged, yaml.safe_dump(redact_config(cfg), sort_keys=False))
        client.log_artifact(run_id, str(logged), "config")
    split_path = out_dir / "split.csv"  # on this machine; logged only when ids may be shared
    atomic_write_csv(split_path, pd.DataFrame(
        [(p, k) for k, ids in split.items() for p in ids], columns=["patient_id", "split"]))
    if share:
        client.log_artifact(run_id, str(split_path), "config")
    client.log_artifact(run_id, str(final), "checkpoints")
    return log_pyfunc_model(uri, run_id, final) if cfg.tracking.log_model else None


def calibrate_checkpoint(
    checkpoint: str | Path,
    cohort: Cohort,
    patient_ids: Sequence[str],
    horizons: Sequence[float] = (1.0, 2.0),
    level: float | None = None,
    tolerance_years: float = LANDMARK_TOLERANCE_YEARS,
    cache_dir: str | Path | None = None,
) -> ConformalCalibration | None:
    """Fit CQR on held-out patients, once per history regime, and store both in the checkpoint
    file (atomically); returns the scored-history correction.

    ``patient_ids`` must be patients the model neither trained on nor was chosen on (``fit``
    passes its calibration split). Their observed changes are landmark outcomes from their own
    scored visits (:func:`progression.data.outcomes.landmark_outcomes`: a scored, imaged index
    visit and a scored visit ``h`` +- ``tolerance_years`` later); forecasts are made from the
    history up to that index twice: as it is (``meta.calibration``, applied by ``predict`` to
    histories with a scored visit) and with every score hidden, films and covariates only
    (``meta.calibration_unscored``, for histories without one). A model leans on observed
    scores, so the two regimes miss by different amounts and one correction would over-cover
    one and under-cover the other. Each is tried in order: separate lower and upper
    corrections per horizon (19 patients per horizon at 90%), the same with horizons pooled per
    year, then one symmetric correction per horizon (9 patients), then pooled; with too few
    patients nothing is stored (a warning says so) and the interval stays uncalibrated.
    ``level`` defaults to the model's interval level.
    """
    ckpt = read_checkpoint(checkpoint)
    meta = checkpoint_meta(ckpt)
    level = float(level if level is not None else meta.config["model"]["interval_level"])
    rule = OutcomeRule(horizons=tuple(float(h) for h in horizons), tolerance_years=tolerance_years)
    outcomes = pd.DataFrame()
    if patient_ids:
        try:
            outcomes = landmark_outcomes(cohort.subset(patient_ids), rule).dropna(
                subset=[OBSERVED_COLUMN])
        except NoObservedOutcomes:  # a pilot cohort: warned below, training still ends
            outcomes = pd.DataFrame()
    if outcomes.empty:
        reason = ("no calibration patients (data.val_fraction x data.calibration_share of the "
                  "cohort rounds to none)" if not patient_ids else
                  f"none of the {len(patient_ids)} calibration patients has a scored visit about "
                  "1-2 years after a scored, imaged one")
        logger.warning("%s: interval not calibrated (%s)", Path(checkpoint).name, reason)
        return None
    index = outcomes.drop_duplicates("patient_id")[["patient_id", "index_date"]]
    held_out = cohort.subset(index["patient_id"])
    observed = outcomes[["patient_id", "horizon_years", OBSERVED_COLUMN]]
    fitted = {}
    for regime, histories in (("scored", held_out), ("unscored", held_out.without_scores())):
        predictions = predict_cohort(checkpoint, histories, horizons=rule.horizons,
                                     index_dates=index, progress=False, cache_dir=cache_dir,
                                     calibrate=False)
        try:
            fitted[regime] = fit_preferred(
                predictions.merge(observed, on=["patient_id", "horizon_years"]), level)
        except CalibrationError as exc:
            logger.warning("%s: interval not calibrated for %s histories (%s)",
                           Path(checkpoint).name, regime, exc)
    if "scored" not in fitted:
        return None
    meta.calibration = fitted["scored"].to_dict()
    meta.calibration_unscored = fitted["unscored"].to_dict() if "unscored" in fitted else None
    ckpt[META_KEY] = meta.to_dict()
    with atomic_open(checkpoint, "wb") as handle:
        torch.save(ckpt, handle)
    for regime, calibration in fitted.items():
        corrections = {h: calibration.correction_for(h)[0]
                       for h in sorted(calibration.n_calibration)}
        logger.info("%s: conformal calibration (%s histories) on %s patient-horizons%s, "
                    "interval widened by %s", Path(checkpoint).name, regime,
                    sum(calibration.n_calibration.values()),
                    " (horizons pooled per year)" if calibration.scale_by_horizon else "",
                    "; ".join(f"{h:g} y: {q.lo:.2f} below, {q.hi:.2f} above"
                              for h, q in corrections.items()))
    return fitted["scored"]
