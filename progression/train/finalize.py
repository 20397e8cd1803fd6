"""After a fit: calibrate the interval, write the model card, log artifacts and the model.

Runs on rank 0 once training has ended, on the final checkpoint (best by ``train.monitor``,
else last): conformal interval correction on the validation patients
(:func:`calibrate_checkpoint`, :mod:`progression.calibration`), ``MODEL_CARD.md`` next to the
run's checkpoints, then config (redacted), card, checkpoint and the MLflow pyfunc model logged
to the run (the split too with ``tracking.share_identifiers=true``).
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
from progression.data.outcomes import OutcomeRule, landmark_outcomes
from progression.io import atomic_open, atomic_write_csv, atomic_write_text
from progression.models.checkpoint import META_KEY, checkpoint_meta, read_checkpoint
from progression.predict import predict_cohort
from progression.pyfunc_model import log_pyfunc_model
from progression.tracking import redact_config
from progression.train.model_card import write_checkpoint_card

logger = logging.getLogger(__name__)


def finalize(cfg: Config, final: Path, cohort: Cohort, split: dict[str, list[str]],
             out_dir: Path, client: Any, run_id: str, uri: str,
             metrics: dict[str, float]) -> str | None:
    """Calibrate ``final`` on the validation split, write and log the model card, config
    (redacted), checkpoint and, with ``tracking.share_identifiers``, the split to MLflow run
    ``run_id``; returns the logged pyfunc model's URI (None with ``tracking.log_model: false``)."""
    if split["val"]:  # conformal interval correction on patients never trained on
        calibrate_checkpoint(final, cohort, split["val"], level=cfg.model.interval_level,
                             cache_dir=cfg.data.cache_dir)
    card = write_checkpoint_card(final, out_dir / "MODEL_CARD.md", metrics=metrics)
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
    """Fit CQR on held-out patients and store it in the checkpoint file (atomically).

    ``patient_ids`` must be patients the model did not train on (``fit`` passes its validation
    split). Their observed changes are landmark outcomes from their own scored visits
    (:func:`progression.data.outcomes.landmark_outcomes`: a scored, imaged index visit and
    a scored visit ``h`` +- ``tolerance_years`` later); forecasts are made from the history up
    to that index. Tried in order: separate lower and upper corrections per horizon (19
    patients per horizon at 90%), the same with horizons pooled per year, then one symmetric
    correction per horizon (9 patients), then pooled; with too few patients nothing is stored
    (a warning says so) and the interval stays uncalibrated. ``level`` defaults to the model's interval level.
    """

    ckpt = read_checkpoint(checkpoint)
    meta = checkpoint_meta(ckpt)
    level = float(level if level is not None else meta.config["model"]["interval_level"])
    held_out = cohort.subset(patient_ids)
    rule = OutcomeRule(horizons=tuple(float(h) for h in horizons), tolerance_years=tolerance_years)
    outcomes = landmark_outcomes(held_out, rule).dropna(subset=[OBSERVED_COLUMN])
    calibration = None
    if not outcomes.empty:
        index = outcomes.drop_duplicates("patient_id")[["patient_id", "index_date"]]
        predictions = predict_cohort(
            checkpoint, held_out.subset(index["patient_id"]), horizons=rule.horizons,
            index_dates=index, progress=False, cache_dir=cache_dir, calibrate=False,
        )
        table = predictions.merge(
            outcomes[["patient_id", "horizon_years", OBSERVED_COLUMN]],
            on=["patient_id", "horizon_years"],
        )
        try:
            calibration = fit_preferred(table, level)
        except CalibrationError as exc:
            reason = str(exc)
    else:
        reason = "no held-out patient has a scored visit about 1-2 years after a scored, imaged one"
    if calibration is None:
        logger.warning("%s: interval not calibrated (%s)", Path(checkpoint).name, reason)
        return None
    meta.calibration = calibration.to_dict()
    ckpt[META_KEY] = meta.to_dict()
    with atomic_open(checkpoint, "wb") as handle:
        torch.save(ckpt, handle)
    corrections = {h: calibration.correction_for(h)[0] for h in sorted(calibration.n_calibration)}
    logger.info("%s: conformal calibration on %s patient-horizons%s, interval widened by %s",
                Path(checkpoint).name, sum(calibration.n_calibration.values()),
                " (horizons pooled per year)" if calibration.scale_by_horizon else "",
                "; ".join(f"{h:g} y: {q.lo:.2f} below, {q.hi:.2f} above" for h, q in corrections.items()))
    return calibration
