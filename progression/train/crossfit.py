"""Honest stacking: out-of-fold readings of the training films for the sequence stage.

Without it the sequence stage learns from readings of the training films made by an encoder
fitted on those same films (in-sample, so more accurate than any reading it meets at
prediction time), a classic stacking leak that can compress forecasts. With
``train.crossfit_folds=K`` (K > 1) the training patients are cut into K folds; for each fold
an image-stage encoder is trained on the other K-1 folds (same config, same epochs) and reads
the films of the held-out fold. The sequence stage then trains on these out-of-fold readings,
while the final encoder (trained on all training patients, exactly as with K = 1) reads the
validation films during training and every film at prediction time. Cost: K extra image
stages. A resumed fit trains the fold encoders again (deterministically).
"""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from progression.config import Config
from progression.data.datamodule import ProgressionDataModule
from progression.errors import ConfigError
from progression.models.checkpoint import CheckpointMeta
from progression.models.forecaster import Forecaster
from progression.models.module import FEATURE_BATCH, ForecastModule

logger = logging.getLogger(__name__)

FOLD_SEED_STRIDE = 7919  # fold k's encoder is seeded with train.seed + (k + 1) * this


@dataclass
class OutOfFoldReadings:
    """Per-image features ``[n_images, 2 + embed_dim]`` (:meth:`Forecaster.image_features`)
    whose ``rows`` (the films of training patients) were read by an encoder that did not train
    on them. ``encoded_by``: patient id -> the fold whose encoder read its films;
    ``trained_on[k]``: the patients fold k's encoder learned from; ``reading[k]``: its
    region-reading correlation on its held-out fold (``image_reading``, None when unscored)."""

    features: torch.Tensor
    rows: np.ndarray
    encoded_by: dict[str, int]
    trained_on: list[list[str]]
    reading: list[dict[str, Any] | None] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What the checkpoint and model card record (no patient identifiers)."""
        corr = [r["val_corr_region"] if r else None for r in self.reading]
        return {"folds": len(self.trained_on), "fold_val_corr_region": corr,
                "fold_sizes": [sum(1 for f in self.encoded_by.values() if f == k)
                               for k in range(len(self.trained_on))]}


def assign_folds(patient_ids: list[str], folds: int, seed: int) -> dict[str, int]:
    """Patient id -> fold in ``0..folds-1``: a seeded shuffle of the sorted ids cut into
    near-equal folds (depends only on the set of ids and ``seed``, like the split)."""
    ids = sorted(str(p) for p in patient_ids)
    if folds > len(ids):
        raise ConfigError(f"config key 'train.crossfit_folds' ({folds}) exceeds the "
                          f"{len(ids)} training patients; use at most that many folds")
    order = np.random.default_rng([seed, folds]).permutation(len(ids))
    return {ids[i]: int(k % folds) for k, i in enumerate(order)}


def check_crossfit(cfg: Config) -> None:
    """Config errors of ``train.crossfit_folds``, named with their keys."""
    k = cfg.train.crossfit_folds
    if k < 1:
        raise ConfigError(f"config key 'train.crossfit_folds': must be >= 1, got {k}")
    if k == 1:
        return
    if not cfg.model.use_images or cfg.train.image_epochs < 1:
        raise ConfigError("config key 'train.crossfit_folds' > 1 trains fold encoders in the "
                          "image stage; it needs model.use_images=true and train.image_epochs >= 1")
    if cfg.train.strategy == "ddp":
        raise ConfigError("config key 'train.crossfit_folds' > 1 is not supported with "
                          "train.strategy=ddp yet; train on one device or set crossfit_folds=1")


def out_of_fold_readings(cfg: Config, dm: ProgressionDataModule,
                         build: Callable[[ProgressionDataModule], Forecaster],
                         progress: bool = False) -> OutOfFoldReadings:
    """Train ``train.crossfit_folds`` fold encoders (``build`` makes a fresh network for a
    data view, as the fit would) and read every training patient's films with the encoder of
    the fold that held it out. The global random state is restored afterwards, so the main
    fit runs exactly as it would without cross-fitting."""
    folds = assign_folds(dm.split["train"], cfg.train.crossfit_folds, cfg.data.split_seed)
    ids = dm.arrays.patient_ids
    position = {str(p): i for i, p in enumerate(ids)}
    image_patient = np.repeat(np.arange(len(ids)), np.diff(dm.arrays.patient_start))[
        dm.arrays.image_visit]
    features = torch.zeros(len(dm.slots), 0)
    gpu = torch.cuda.is_available() and cfg.train.accelerator in ("auto", "gpu", "cuda")
    device = torch.device("cuda" if gpu else "cpu")
    filled, trained_on, reading = [], [], []
    with _kept_random_state():
        for k in range(cfg.train.crossfit_folds):
            held = sorted(p for p, f in folds.items() if f == k)
            rest = sorted(p for p, f in folds.items() if f != k)
            view = dm.with_patients(train=np.array([position[p] for p in rest], dtype=np.int64),
                                    val=np.array([position[p] for p in held], dtype=np.int64))
            pl.seed_everything(cfg.train.seed + (k + 1) * FOLD_SEED_STRIDE, workers=True,
                               verbose=False)
            model, fold_reading = _train_fold_encoder(cfg, view, build, progress)
            rows = np.flatnonzero(np.isin(image_patient, view.patients["val"]))
            if features.shape[1] == 0:
                features = torch.zeros(len(dm.slots), 2 + model.encoder.embed_dim)
            if len(rows):
                read = model.to(device).encode_films(dm.cache, dm.slots, dm.arrays.image_region,
                                                     rows, device, FEATURE_BATCH)
                features[rows] = read[rows].cpu()
            model.cpu()
            filled.append(rows)
            trained_on.append(rest)
            reading.append(fold_reading)
            logger.info("cross-fitting: fold %d/%d encoder trained on %d patients read %d films",
                        k + 1, cfg.train.crossfit_folds, len(rest), len(rows))
    return OutOfFoldReadings(features=features, rows=np.sort(np.concatenate(filled)),
                             encoded_by=folds, trained_on=trained_on, reading=reading)


def _train_fold_encoder(cfg: Config, view: ProgressionDataModule,
                        build: Callable[[ProgressionDataModule], Forecaster],
                        progress: bool) -> tuple[Forecaster, dict[str, Any] | None]:
    """One image stage on ``view``'s training patients (validated on its held-out fold), with
    the main fit's settings but no MLflow run and no checkpoint files."""
    model = build(view)
    meta = CheckpointMeta(config={}, covariates={}, layout={})
    module = ForecastModule(model, cfg, view.image_epochs, meta)
    t = cfg.train
    trainer = pl.Trainer(
        max_epochs=view.image_epochs, accelerator=t.accelerator, devices=1,
        precision=t.precision, deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val or None, logger=False,
        enable_checkpointing=False, reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0, use_distributed_sampler=False,
        enable_progress_bar=progress, enable_model_summary=False)
    threads = torch.get_num_threads()
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    try:
        with warnings.catch_warnings():  # the same nothing-to-act-on warnings as the main fit
            warnings.filterwarnings("ignore", message=".*across ranks is zero.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            trainer.fit(module, datamodule=view)
    finally:
        torch.set_num_threads(threads)
    return model, meta.image_reading


class _kept_random_state:
    """Restore Python's, numpy's and torch's global random state on exit."""

    def __enter__(self) -> None:
        # the legacy global generator is the one pl.seed_everything seeds
        self._state = (random.getstate(), np.random.get_state(),  # noqa: NPY002
                       torch.get_rng_state())

    def __exit__(self, *exc: object) -> None:
        py, numpy_state, torch_state = self._state
        random.setstate(py)
        np.random.set_state(numpy_state)  # noqa: NPY002
        torch.set_rng_state(torch_state)
