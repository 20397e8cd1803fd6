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
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from progression.cohort import read_cohort
from progression.config import Config, dump_config, flatten, to_dict
from progression.data.covariates import CovariateSpec
from progression.data.datamodule import ProgressionDataModule
from progression.errors import CheckpointError, ConfigError
from progression.io import atomic_open, atomic_write_csv
from progression.models.checkpoint import (
    CHECKPOINT_FORMAT,
    read_checkpoint,
    shape_differences,
    trained_encoder,
)
from progression.models.forecaster import build_forecaster
from progression.models.module import MIN_READING_CORR, ForecastModule

logger = logging.getLogger(__name__)

RUN_ID_ENV = "PROGRESSION_MLFLOW_RUN_ID"  # rank 0 -> DDP ranks started by Lightning
_HIGHER_IS_BETTER = ("auroc", "corr", "coverage")


@dataclass
class FitResult:
    """What a fit produced. ``metrics``: the last epoch's logged values (``val/...``,
    ``train/...``) plus ``best/<monitor>``; ``model_uri``: the logged MLflow pyfunc model."""

    run_id: str | None
    checkpoint_path: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    last_checkpoint_path: Path | None = None
    model_uri: str | None = None


class StageCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps ``last.ckpt`` in every epoch but ranks by ``monitor`` only in
    epochs that log it (the image stage has no forecasts, so no ``val/mae_delta_1y``)."""

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        if self.monitor is not None and self.monitor not in monitor_candidates:
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # Lightning writes last.ckpt only in epochs that also write a top-k checkpoint, so a
        # run killed in the image stage, or after epochs without improvement, would resume
        # from far back (or not at all).
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written like every other output (:mod:`progression.io`): a temporary file
    beside the target, fsynced, then renamed onto it. Lightning's own writer stages the file
    in $TMPDIR and moves it, which is a plain copy where $TMPDIR is another file system (a
    tmpfs /tmp), so a run killed mid-save left a truncated ``last.ckpt``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        with atomic_open(path, "wb") as handle:
            torch.save(checkpoint, handle)


def _strategy(name: str) -> Any:
    if name == "ddp":
        from pytorch_lightning.strategies import DDPStrategy

        # Each stage leaves the other stage's parameters without gradients.
        return DDPStrategy(find_unused_parameters=True)
    return name


def _resume_meta(resume: str | Path, cfg: Config) -> dict[str, Any]:
    meta = read_checkpoint(resume)["progression"]
    diff = shape_differences(meta["config"], cfg)
    if diff:
        raise CheckpointError(
            f"cannot resume from {resume}: the config differs from the checkpoint's in "
            f"{', '.join(diff)}; resume with the same model settings and image size (omit "
            "--config to reuse the checkpoint's config)")
    return meta


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
    from mlflow import MlflowClient

    from progression import tracking

    if not cfg.data.path:
        raise ConfigError("config key 'data.path' is empty; give the cohort directory (--data DIR)")
    if cfg.train.image_epochs > cfg.train.max_epochs:
        raise ConfigError(
            f"config key 'train.image_epochs' ({cfg.train.image_epochs}) exceeds "
            f"'train.max_epochs' ({cfg.train.max_epochs}); the sequence stage needs epochs too")
    if cfg.train.init_encoder and not cfg.model.use_images:
        raise ConfigError("config key 'train.init_encoder' needs an image model; remove it or "
                          "set model.use_images=true")
    progress = cfg.train.progress if progress is None else progress
    is_main = rank_zero_only.rank == 0
    meta_in = _resume_meta(resume, cfg) if resume is not None else None
    # Checked (or switched to the offline store) before reading any image: fail fast.
    uri = tracking.usable_tracking_uri(cfg) if is_main else tracking.resolve_tracking_uri(cfg)
    # The encoder to start from, a path or an MLflow model URI (checked before any work; a
    # resumed fit has its own weights).
    encoder_state = source = encoder_ref = None
    if cfg.train.init_encoder and meta_in is None:
        from progression.predict import resolve_checkpoint

        local = resolve_checkpoint(cfg.train.init_encoder, uri)
        encoder_state, source = trained_encoder(local, cfg)
        given = Path(cfg.train.init_encoder)
        encoder_ref = str(local.resolve()) if local == given else cfg.train.init_encoder
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)

    cohort = read_cohort(cfg.data.path)
    spec = CovariateSpec.from_dict(meta_in["covariates"]) if meta_in else None
    dm = ProgressionDataModule(cfg, cohort, spec, progress=progress)
    if is_main:
        dm.prepare_data()
    dm.setup("fit")
    model = build_forecaster(cfg.model, dm.layout)
    stats = dm.target_stats()
    model.sequence.rate_scale.fill_(float(stats["rate_scale"]))
    if model.encoder is not None and encoder_state is not None:
        model.encoder.load_state_dict(encoder_state)
    elif model.encoder is not None:
        model.encoder.init_damage_bias(torch.as_tensor(stats["region_log_mean"]),
                                       torch.as_tensor(stats["joint_log_mean"]))

    run_id: str | None = None
    client = MlflowClient(uri) if is_main else None
    if is_main:
        if meta_in is not None:
            run_id = meta_in["mlflow"]["run_id"]
            try:
                client.get_run(run_id)
            except Exception:  # noqa: BLE001 - MlflowException or a store error
                raise CheckpointError(
                    f"cannot resume MLflow run {run_id} of {resume}: it is not in the tracking "
                    f"store {uri}; use the tracking URI the run was logged to") from None
            client.update_run(run_id, status="RUNNING")
        else:
            tags = tracking.run_tags(cohort.fingerprint, len(cohort.patients), len(dm.arrays.image_path))
            tags.update(extra_tags or {})
            if parent_run_id:
                tags["mlflow.parentRunId"] = parent_run_id
            exp = tracking.experiment_id(client, cfg.tracking.experiment, uri)
            run_id = client.create_run(exp, run_name=cfg.tracking.run_name or None, tags=tags).info.run_id
        params = flatten(to_dict(cfg))
        params.update({f"data.n_{k}_patients": len(v) for k, v in dm.split.items()})
        tracking.log_params(client, run_id, params)
        os.environ[RUN_ID_ENV] = run_id
    else:
        run_id = os.environ.get(RUN_ID_ENV)

    out_dir = Path(cfg.train.output_dir).resolve() / (run_id or "run")
    meta = {
        "format": CHECKPOINT_FORMAT,
        "config": to_dict(cfg),
        "covariates": dm.spec.to_dict(),
        "layout": dm.layout.to_dict(),
        "image_epochs": dm.image_epochs,
        # whether the per-joint head had reader scores to learn from (explain shows it only then)
        "joint_supervised": cohort.joint_scores is not None and not cohort.joint_scores.empty,
        "split": dm.split,
        "cohort_fingerprint": cohort.fingerprint,
        "mlflow": {"run_id": run_id, "tracking_uri": uri, "experiment": cfg.tracking.experiment},
    }
    if source is not None:
        meta["encoder_from"] = {"checkpoint": encoder_ref,
                                "cohort_fingerprint": source.get("cohort_fingerprint"),
                                "image_epochs": source.get("image_epochs")}
        meta["joint_supervised"] = meta["joint_supervised"] or bool(source.get("joint_supervised"))
        if "image_reading" in source:  # replaced if this fit trains the encoder further
            meta["image_reading"] = source["image_reading"]
    for key in ("image_reading", "encoder_from"):  # resumed after the image stage
        if meta_in and key in meta_in:
            meta[key] = meta_in[key]
    module = ForecastModule(model, cfg, dm.image_epochs, meta)
    monitor = cfg.train.monitor
    checkpoint = StageCheckpoint(
        dirpath=out_dir / "checkpoints", filename="best", monitor=monitor,
        mode="max" if any(k in monitor for k in _HIGHER_IS_BETTER) else "min",
        save_top_k=1, save_last=True, auto_insert_metric_name=False,
        enable_version_counter=False, save_on_train_epoch_end=True)
    mlflow_logger = MLFlowLogger(experiment_name=cfg.tracking.experiment, tracking_uri=uri,
                                 run_id=run_id, artifact_location=tracking.artifact_location(uri))
    trainer = pl.Trainer(
        max_epochs=cfg.train.max_epochs,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        strategy=_strategy(cfg.train.strategy),
        precision=cfg.train.precision,
        deterministic=cfg.train.deterministic,
        gradient_clip_val=cfg.train.gradient_clip_val or None,
        logger=mlflow_logger,
        callbacks=[checkpoint, *callbacks],
        plugins=[AtomicCheckpointIO()],
        reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # GroupedBatchSampler splits batches across ranks
        enable_progress_bar=progress,
        enable_model_summary=progress,
        log_every_n_steps=1,  # metrics are logged per epoch; no step-level flush to wait for
        default_root_dir=out_dir,
    )
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
            trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume is not None else None)
    finally:
        torch.set_num_threads(threads)
        if is_main:
            os.environ.pop(RUN_ID_ENV, None)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if is_main:
        _warn_if_films_unread(meta.get("image_reading"), cfg)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    last = Path(checkpoint.last_model_path) if checkpoint.last_model_path else None
    if checkpoint.best_model_score is not None:
        metrics[f"best/{monitor}"] = float(checkpoint.best_model_score)
    final = best or last
    model_uri = None
    if trainer.is_global_zero and run_id is not None and final is not None:
        from progression.calibration import calibrate_checkpoint
        from progression.explain.model_card import write_checkpoint_card

        if dm.split["val"]:  # conformal interval correction on patients never trained on
            calibrate_checkpoint(final, cohort, dm.split["val"], level=cfg.model.interval_level,
                                 cache_dir=cfg.data.cache_dir)
        card = write_checkpoint_card(final, out_dir / "MODEL_CARD.md", metrics=metrics)
        client.log_artifact(run_id, str(card))
        config_path = out_dir / "config.yaml"
        dump_config(cfg, config_path)
        client.log_artifact(run_id, str(config_path), "config")
        import pandas as pd

        split_path = out_dir / "split.csv"
        atomic_write_csv(split_path, pd.DataFrame(
            [(p, k) for k, ids in dm.split.items() for p in ids], columns=["patient_id", "split"]))
        client.log_artifact(run_id, str(split_path), "config")
        client.log_artifact(run_id, str(final), "checkpoints")
        if cfg.tracking.log_model:
            model_uri = tracking.log_pyfunc_model(uri, run_id, final)
        if best is not None:
            client.log_metric(run_id, f"best/{monitor}", metrics[f"best/{monitor}"],
                              step=trainer.global_step)
    return FitResult(run_id=run_id, checkpoint_path=final, metrics=metrics,
                     last_checkpoint_path=last, model_uri=model_uri)
