"""``fit(cfg) -> FitResult``: train a forecasting model, tracked as one MLflow run.

The staged fit (see :mod:`progression.models.module`) runs in ONE Lightning ``Trainer``
and ONE MLflow run: ``train.image_epochs`` epochs on single visits' films, then the
sequence model on features of every film encoded once. Checkpoints (``best.ckpt`` by
``train.monitor``, ``last.ckpt``) go to ``<train.output_dir>/<run_id>/checkpoints/`` and
carry the MLflow run id, so ``fit(cfg, resume=".../last.ckpt")`` continues both the
training and the same run. After training, the interval of the final checkpoint is
calibrated on the validation patients (:mod:`progression.calibration`), a model card is
written next to it (``MODEL_CARD.md``), and config, split, checkpoint, card and an MLflow
pyfunc model are logged to the run.

DDP (``train.strategy=ddp``): Lightning starts the other ranks by re-running the command;
only rank 0 creates the MLflow run and writes to it, and hands the run id to the other
ranks through the environment (they inherit it when Lightning starts them).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from mlflow import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from progression import tracking
from progression.calibration import min_symmetric_patients
from progression.cohort import Cohort, read_cohort
from progression.config import Config, dump_config, to_dict
from progression.data.datamodule import ProgressionDataModule
from progression.errors import CheckpointError, ConfigError
from progression.models.checkpoint import CheckpointMeta, hashed_split, shape_differences
from progression.models.forecaster import Forecaster, build_forecaster
from progression.models.module import MIN_READING_CORR, ForecastModule
from progression.train.callbacks import (
    AtomicCheckpointIO,
    StageCheckpoint,
    stage_checkpoint,
    strategy,
)
from progression.train.crossfit import OutOfFoldReadings, check_crossfit, out_of_fold_readings
from progression.train.finalize import finalize
from progression.trained import TrainedModel, load_trained

logger = logging.getLogger(__name__)

RUN_ID_ENV = "PROGRESSION_MLFLOW_RUN_ID"  # rank 0 -> DDP ranks started by Lightning


@dataclass
class FitResult:
    """What a fit produced. ``metrics``: the last epoch's logged values (``val/...``,
    ``train/...``) plus ``best/<monitor>``; ``model_uri``: the logged MLflow pyfunc model."""

    run_id: str | None
    checkpoint_path: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    last_checkpoint_path: Path | None = None
    model_uri: str | None = None


@dataclass
class StartEncoder:
    """``train.init_encoder``: the encoder weights a fit starts from and where they came from."""

    state: dict[str, torch.Tensor]
    source: CheckpointMeta
    ref: str  # the checkpoint's absolute path, or the MLflow URI as given


def fit(
    cfg: Config,
    resume: str | Path | None = None,
    callbacks: Sequence[pl.Callback] = (),
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Train on the cohort at ``cfg.data.path``; returns the run id, checkpoint and metrics.

    ``resume``: a checkpoint of an earlier fit (e.g. ``last.ckpt``) to continue, in the
    same MLflow run; its covariate statistics and split are reused. ``callbacks`` are extra
    Lightning callbacks (e.g. Optuna pruning); ``parent_run_id`` nests the run under a
    parent (a tuning study); ``extra_tags`` are added to the run. Raises
    :class:`~progression.errors.TrackingError` before any training when the MLflow store
    cannot be used.
    """
    check_config(cfg)
    progress = cfg.train.progress if progress is None else progress
    is_main = rank_zero_only.rank == 0
    resumed = resumed_model(resume, cfg) if resume is not None else None
    # Checked (or switched to the offline store) before reading any image: fail fast.
    uri = tracking.usable_tracking_uri(cfg) if is_main else tracking.resolve_tracking_uri(cfg)
    # A resumed fit has its own weights; a start encoder is checked before any work.
    encoder = start_encoder(cfg, uri) if cfg.train.init_encoder and resumed is None else None
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)

    cohort = read_cohort(cfg.data.path)
    dm = prepare_data(cfg, cohort, resumed, progress, is_main)
    if is_main:
        _warn_if_pilot(dm.split, cfg)
    model = build_model(cfg, dm, encoder)
    run_id = open_run(cfg, uri, cohort, dm, resumed, parent_run_id, extra_tags, is_main)
    out_dir = Path(cfg.train.output_dir).resolve() / (run_id or "run")
    meta = checkpoint_meta(cfg, cohort, dm, run_id, uri, encoder, resumed)
    checkpoint = stage_checkpoint(out_dir / "checkpoints", cfg.train.monitor)
    trainer = make_trainer(cfg, uri, run_id, out_dir, [checkpoint, *callbacks], progress)
    out_of_fold = crossfit_readings(cfg, dm, encoder, meta, progress)
    module = ForecastModule(model, cfg, dm.image_epochs, meta, out_of_fold)
    if is_main:  # the paths as given, for a resume on this machine (never logged as such)
        dump_config(cfg, out_dir / "config.yaml")
    # Lightning's MLFlowLogger points MLflow's process-wide URI at the run's store: put it back
    with tracking.kept_tracking_uri(), tracking.system_metrics(
            uri, run_id if is_main else None, cfg.tracking.system_metrics):
        run_trainer(trainer, module, dm, resumed, cfg, is_main)

    metrics = final_metrics(trainer, checkpoint, cfg.train.monitor)
    if is_main:
        _warn_if_films_unread(meta.image_reading, cfg)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    last = Path(checkpoint.last_model_path) if checkpoint.last_model_path else None
    final = best or last
    model_uri = None
    if trainer.is_global_zero and run_id is not None and final is not None:
        client = MlflowClient(uri)
        model_uri = finalize(cfg, final, cohort, dm.split, out_dir, client, run_id, uri, metrics)
        if best is not None:
            key = f"best/{cfg.train.monitor}"
            client.log_metric(run_id, key, metrics[key], step=trainer.global_step)
    return FitResult(run_id=run_id, checkpoint_path=final, metrics=metrics,
                     last_checkpoint_path=last, model_uri=model_uri)


def check_config(cfg: Config) -> None:
    """Config errors a fit would only meet late, named with their keys."""
    if not cfg.data.path:
        raise ConfigError("config key 'data.path' is empty; give the cohort directory (--data DIR)")
    if cfg.train.image_epochs > cfg.train.max_epochs:
        raise ConfigError(
            f"config key 'train.image_epochs' ({cfg.train.image_epochs}) exceeds "
            f"'train.max_epochs' ({cfg.train.max_epochs}); the sequence stage needs epochs too")
    check_crossfit(cfg)
    if cfg.train.init_encoder and not cfg.model.use_images:
        raise ConfigError("config key 'train.init_encoder' needs an image model; remove it or "
                          "set model.use_images=true")


def resumed_model(resume: str | Path, cfg: Config) -> TrainedModel:
    """The checkpoint to resume from, checked to have the weights' shape ``cfg`` describes."""
    trained = load_trained(resume)
    diff = shape_differences(trained.meta.config, cfg)
    if diff:
        raise CheckpointError(
            f"cannot resume from {resume}: the config differs from the checkpoint's in "
            f"{', '.join(diff)}; resume with the same model settings and image size (omit "
            "--config to reuse the checkpoint's config)")
    return trained


def start_encoder(cfg: Config, uri: str) -> StartEncoder:
    """``train.init_encoder`` (a path or an MLflow model URI) loaded and checked against ``cfg``."""
    trained = load_trained(cfg.train.init_encoder, uri)
    given = Path(cfg.train.init_encoder)
    ref = str(trained.path.resolve()) if trained.path == given else cfg.train.init_encoder
    return StartEncoder(trained.encoder_state(cfg), trained.meta, ref)


def prepare_data(cfg: Config, cohort: Cohort, resumed: TrainedModel | None, progress: bool,
                 is_main: bool) -> ProgressionDataModule:
    """The DataModule, set up for fitting (a resumed fit reuses its covariate statistics)."""
    spec = resumed.covariates if resumed is not None else None
    dm = ProgressionDataModule(cfg, cohort, spec, progress=progress)
    if is_main:
        dm.prepare_data()
    dm.setup("fit")
    return dm


def build_model(cfg: Config, dm: ProgressionDataModule, encoder: StartEncoder | None) -> Forecaster:
    """A fresh network scaled to the training targets, its encoder from ``encoder`` if given,
    else with damage heads biased to the training cohort's mean damage."""
    model = build_forecaster(cfg.model, dm.layout, dm.cohort.system.rapid_rate)
    stats = dm.target_stats()
    model.sequence.rate_scale.fill_(float(stats["rate_scale"]))
    if model.encoder is not None and encoder is not None:
        model.encoder.load_state_dict(encoder.state)
    elif model.encoder is not None:
        model.encoder.init_damage_bias(torch.as_tensor(stats["region_log_mean"]),
                                       torch.as_tensor(stats["joint_log_mean"]))
    return model


def crossfit_readings(cfg: Config, dm: ProgressionDataModule, encoder: StartEncoder | None,
                      meta: CheckpointMeta, progress: bool) -> OutOfFoldReadings | None:
    """``train.crossfit_folds`` > 1: the training films read by fold encoders that did not
    train on them (:mod:`progression.train.crossfit`), recorded in ``meta``; else None."""
    if cfg.train.crossfit_folds <= 1 or dm.image_epochs == 0:
        return None
    readings = out_of_fold_readings(cfg, dm, lambda view: build_model(cfg, view, encoder), progress)
    meta.crossfit = readings.summary()
    return readings


def open_run(cfg: Config, uri: str, cohort: Cohort, dm: ProgressionDataModule,
             resumed: TrainedModel | None, parent_run_id: str | None,
             extra_tags: dict[str, str] | None, is_main: bool) -> str | None:
    """The MLflow run id: rank 0 creates the run with the one run writer
    (:mod:`progression.tracking.runs`: name, tags, params, the cohort's splits as datasets)
    or reopens a resumed fit's; the other DDP ranks read it from the environment."""
    if not is_main:
        return os.environ.get(RUN_ID_ENV)
    client = MlflowClient(uri)
    share = cfg.tracking.share_identifiers
    if resumed is not None:
        run_id = resumed.meta.run_id
        try:
            client.get_run(run_id)
        except Exception:  # noqa: BLE001 - MlflowException or a store error
            raise CheckpointError(
                f"cannot resume MLflow run {run_id} of {resumed.path}: it is not in the "
                f"tracking store {uri}; use the tracking URI the run was logged to") from None
        client.update_run(run_id, status="RUNNING")
    else:
        kind = (extra_tags or {}).get(tracking.KIND_TAG, "train")
        tags = {**tracking.run_tags(kind, cohort, len(dm.arrays.image_path),
                                    share_identifiers=share), **(extra_tags or {})}
        run_id = tracking.create_run(client, cfg.tracking.experiment,
                                     name=tracking.training_run_name(cfg), tags=tags,
                                     parent_run_id=parent_run_id)
        contexts = {"train": "training", "val": "validation", "test": "evaluation"}
        tracking.log_cohorts(client, run_id, [
            tracking.cohort_input(cohort.subset(ids), contexts[name], name, share)
            for name, ids in dm.split.items() if ids and name in contexts])
    params = to_dict(cfg)
    params.update({f"data.n_{k}_patients": len(v) for k, v in dm.split.items()})
    tracking.log_params(client, run_id, params, share)
    os.environ[RUN_ID_ENV] = run_id
    return run_id


def checkpoint_meta(cfg: Config, cohort: Cohort, dm: ProgressionDataModule, run_id: str | None,
                    uri: str, encoder: StartEncoder | None,
                    resumed: TrainedModel | None) -> CheckpointMeta:
    """What every checkpoint of this fit stores beside its weights: unless
    ``tracking.share_identifiers``, the split as salted hashes and the config with paths cut
    to their last component and credentials hidden (:mod:`progression.tracking.redact`); the
    run directory's ``config.yaml`` keeps the paths for a resume on this machine."""
    share = cfg.tracking.share_identifiers
    split, salt = (dm.split, None) if share else hashed_split(dm.split)
    meta = CheckpointMeta(
        config=tracking.redact_config(cfg),
        covariates=dm.spec.to_dict(),
        layout=dm.layout.to_dict(),
        image_epochs=dm.image_epochs,
        # whether the per-joint head had reader scores to learn from (explain shows it only then)
        joint_supervised=cohort.joint_scores is not None and not cohort.joint_scores.empty,
        split=split,
        split_salt=salt,
        cohort_fingerprint=cohort.fingerprint,
        scoring=cohort.scoring,
        simulated=cohort.root is not None and (Path(cohort.root) / "truth").is_dir(),
        mlflow={"run_id": run_id, "tracking_uri": tracking.redact(uri, share),
                "experiment": cfg.tracking.experiment},
    )
    if encoder is not None:
        source = encoder.source
        meta.encoder_from = {"checkpoint": tracking.redact(encoder.ref, share),
                             "cohort_fingerprint": source.cohort_fingerprint,
                             "image_epochs": source.image_epochs}
        meta.joint_supervised = meta.joint_supervised or source.joint_supervised
        meta.image_reading = source.image_reading  # replaced if this fit trains the encoder further
    if resumed is not None:  # resumed after the image stage
        meta.image_reading = resumed.meta.image_reading or meta.image_reading
        meta.encoder_from = resumed.meta.encoder_from or meta.encoder_from
    return meta


def make_trainer(cfg: Config, uri: str, run_id: str | None, out_dir: Path,
                 callbacks: list[pl.Callback], progress: bool) -> pl.Trainer:
    """ONE Lightning Trainer for both stages, logging to the fit's MLflow run."""
    mlflow_logger = MLFlowLogger(experiment_name=cfg.tracking.experiment, tracking_uri=uri,
                                 run_id=run_id, artifact_location=tracking.artifact_location(uri))
    return pl.Trainer(
        max_epochs=cfg.train.max_epochs,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        strategy=strategy(cfg.train.strategy),
        precision=cfg.train.precision,
        deterministic=cfg.train.deterministic,
        gradient_clip_val=cfg.train.gradient_clip_val or None,
        logger=mlflow_logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # GroupedBatchSampler splits batches across ranks
        enable_progress_bar=progress,
        enable_model_summary=progress,
        log_every_n_steps=1,  # metrics are logged per epoch; no step-level flush to wait for
        default_root_dir=out_dir,
    )


def run_trainer(trainer: pl.Trainer, module: ForecastModule, dm: ProgressionDataModule,
                resumed: TrainedModel | None, cfg: Config, is_main: bool) -> None:
    """``trainer.fit`` with ``train.threads`` CPU threads (restored after) and without the
    warnings that hold nothing to act on."""
    threads = torch.get_num_threads()
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    try:
        with warnings.catch_warnings():
            # The image stage has no Lightning validation loader on purpose.
            warnings.filterwarnings("ignore", message=".*across ranks is zero.*")
            # Resuming writes into the run's own checkpoint directory.
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            # Lightning's own use of a deprecated torch API, once per epoch: nothing to act on.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            trainer.fit(module, datamodule=dm,
                        ckpt_path=str(resumed.path) if resumed is not None else None)
    finally:
        torch.set_num_threads(threads)
        if is_main:
            os.environ.pop(RUN_ID_ENV, None)


def final_metrics(trainer: pl.Trainer, checkpoint: StageCheckpoint, monitor: str) -> dict[str, float]:
    """The last epoch's logged values plus ``best/<monitor>``."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if checkpoint.best_model_score is not None:
        metrics[f"best/{monitor}"] = float(checkpoint.best_model_score)
    return metrics


def _warn_if_films_unread(reading: dict[str, Any] | None, cfg: Config) -> None:
    """Say so when the encoder ends its stage without a reading of damage that generalises:
    the run still succeeds, but its forecasts then rest on covariates and scored history."""
    if not reading or reading["val_corr_region"] >= MIN_READING_CORR:
        return
    logger.warning(
        "the image encoder has not learned to read damage from the films: its region readings "
        "correlate %.2f with the reader's scores on validation films after %d image epochs "
        "(runs that read damage reach 0.75-0.9). Forecasts rest on covariates and scored "
        "history. Erosions show at 256 px or more (data.image_size is %d), and the encoder "
        "can need 30-60 image epochs before it starts to read (train.image_epochs): use "
        "--config cpu256 on a CPU or --config gpu on a GPU (docs/model.md).",
        reading["val_corr_region"], reading["image_epochs"], cfg.data.image_size)


def _warn_if_pilot(split: dict[str, list[str]], cfg: Config) -> None:
    """Say so when the validation split is too small to choose the best epoch reliably or to
    calibrate the interval: a pilot cohort still trains and its checkpoint is still written."""
    n_val = len(split["val"])
    needed = min_symmetric_patients(cfg.model.interval_level)
    if n_val >= needed:
        return
    n_all = sum(len(ids) for ids in split.values())
    logger.warning(
        "too few validation patients: %d of %d (data.val_fraction=%g); the best epoch is "
        "chosen on them and the %g%% interval needs at least %d held-out patients with a "
        "scored follow-up visit to be calibrated, so it will likely stay uncalibrated. The "
        "checkpoint is still written; for a model to rely on, add patients (or raise "
        "data.val_fraction).",
        n_val, n_all, cfg.data.val_fraction, 100 * cfg.model.interval_level, needed)
