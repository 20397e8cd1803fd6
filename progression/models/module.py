"""LightningModule for the staged fit; it receives the network (:class:`Forecaster`) ready made.

Epochs ``< image_epochs`` (stage 1) train the shared encoder and its region/joint heads on
single visits' films. Later epochs (stage 2) encode every film once with the frozen encoder
(:meth:`ForecastModule.refresh_features`) and train the sequence model on that table, which
takes seconds per epoch on a CPU. One optimizer holds both parameter groups; the group not
in use in a stage receives no gradient, so AdamW leaves it untouched.

Validation metrics are computed on all validation rows at the end of each epoch (gathered
across DDP ranks, so every rank logs the same value): ``val/mae_delta_1y`` (SvdH units, pairs
about one year apart), ``val/auroc_rapid_1y``, ``val/mae_svdh_current`` and more. In the
sequence stage, validation hides observed scores from the input, as for an unscored cohort.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from progression.config import Config
from progression.data.augment import augment_images
from progression.data.horizons import ONE_YEAR_METRIC_WINDOW
from progression.models.checkpoint import META_KEY, CheckpointMeta
from progression.models.forecaster import Forecaster
from progression.models.losses import (
    change_losses,
    film_change_loss,
    log_damage_loss,
    ordering_loss,
)

# Validation correlation of region readings with reader scores below which the encoder has
# not learned to read damage (runs that read it reach 0.75-0.9; docs/model.md).
MIN_READING_CORR = 0.5
FEATURE_BATCH = 256  # films per forward pass when encoding the whole cohort


def _auroc(score: np.ndarray, label: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(label) == 0 or label.min() == label.max():
        return float("nan")
    return float(roc_auc_score(label, score))


class ForecastModule(pl.LightningModule):
    """Staged training of a :class:`Forecaster`.

    ``meta`` is stored in every checkpoint under ``"progression"`` (config, covariate
    statistics, input layout, MLflow run id; :class:`CheckpointMeta`) so a checkpoint alone
    rebuilds the model.
    """

    def __init__(self, model: Forecaster, cfg: Config, image_epochs: int, meta: CheckpointMeta,
                 out_of_fold: Any = None):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.image_epochs = image_epochs if model.encoder is not None else 0
        self.meta = meta
        # train.crossfit_folds > 1: readings of the training films by encoders that did not
        # see them (progression.train.crossfit.OutOfFoldReadings); they replace this encoder's.
        self.out_of_fold = out_of_fold
        self._features: torch.Tensor | None = None
        self._val_rows: dict[str, list[torch.Tensor]] = {}
        # Training losses summed over the epoch (x batch size), logged once at its end.
        self._train_sums: dict[str, torch.Tensor] = {}
        self._train_count = 0

    def on_fit_start(self) -> None:
        # On a GPU: channels-last convolutions (the layout bf16 tensor cores read fastest)
        # and cuDNN's kernel autotuner, unless the run asks for deterministic kernels.
        if self.device.type == "cuda":
            if self.model.encoder is not None:
                self.model.encoder.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = not self.cfg.train.deterministic

    # ---- stages --------------------------------------------------------------------------
    def stage(self, epoch: int | None = None) -> str:
        epoch = self.current_epoch if epoch is None else epoch
        return "image" if epoch < self.image_epochs else "sequence"

    @torch.no_grad()
    def refresh_features(self) -> torch.Tensor:
        """Encode the films of training/validation patients once with the current encoder."""
        dm = self.trainer.datamodule
        if self.model.encoder is None or len(dm.arrays.image_path) == 0:
            self._features = torch.zeros(0, 2, device=self.device)
            return self._features
        feats = self.model.encode_films(dm.cache, dm.slots, dm.arrays.image_region,
                                        dm.feature_rows(), self.device, FEATURE_BATCH,
                                        bf16="bf16" in str(self.trainer.precision))
        if self.out_of_fold is not None:
            rows = torch.from_numpy(self.out_of_fold.rows).to(self.device)
            feats[rows] = self.out_of_fold.features[self.out_of_fold.rows].to(feats)
        self._features = feats
        return feats

    def on_train_epoch_start(self) -> None:
        if self.stage() == "sequence" and self._features is None:
            self.refresh_features()
        elif self.stage() == "image":
            self._features = None  # the encoder is changing

    def _sequence_features(self) -> torch.Tensor:
        if self._features is None:
            self.refresh_features()
        return self._features

    # ---- steps ---------------------------------------------------------------------------
    def _image_step(self, batch: dict[str, torch.Tensor], train: bool) -> dict[str, torch.Tensor]:
        images = batch["images"]
        if train and self.cfg.data.augment:
            images = augment_images(images)
        out = self.model.encoder(images, batch["region"])
        region_log, joint_log = out["region_log"], out["joint_log"]
        units = torch.expm1(region_log.float().clamp(min=0))
        n_visits = batch["visit_target"].shape[0]
        visit_units = units.new_zeros(n_visits, 2).index_add(0, batch["image_visit"], units)
        visit_pred = torch.log1p(torch.stack(
            [visit_units.sum(-1), visit_units[:, 0], visit_units[:, 1]], dim=-1))
        target = batch["visit_target"].clone()
        target[~batch["complete"]] = float("nan")  # a partial visit cannot be compared to its total
        w = self.cfg.loss
        losses = {
            "region": log_damage_loss(region_log, batch["region_target"]),
            "joint": log_damage_loss(joint_log, batch["joint_target"]),
            "current": log_damage_loss(visit_pred, target),
        }
        losses["loss"] = w.region * losses["region"] + w.joint * losses["joint"] + w.current * losses["current"]
        if w.ordering > 0:  # damage does not heal: later films of a region read no less
            losses["ordering"] = ordering_loss(region_log, batch["image_visit"], batch["region"],
                                               batch["visit_patient"], batch["visit_years"])
            losses["loss"] = losses["loss"] + w.ordering * losses["ordering"]
        if not train:
            self._collect("region", torch.stack([units.sum(-1), batch["region_target"].sum(-1)], -1))
            self._collect("current", torch.stack([torch.expm1(visit_pred[:, 0]), target[:, 0]], -1))
        return losses

    def _sequence_step(self, batch: dict[str, torch.Tensor], train: bool) -> dict[str, torch.Tensor]:
        inputs = dict(batch)
        keep = batch["obs_mask"]
        if train:
            p = self.cfg.model.score_input_dropout
            keep = keep & (torch.rand(keep.shape[:2], device=keep.device) >= p).unsqueeze(-1)
        else:
            keep = torch.zeros_like(keep)  # validate as on an unscored cohort
        inputs["obs_mask"] = keep
        out = self.model.sequence(self._sequence_features(), inputs)
        obs = batch["obs"].masked_fill(~batch["visit_mask"].unsqueeze(-1), float("nan"))
        state = out["state"][batch["pair_b"], batch["pair_i"]]
        pairs = self.model.sequence.pair_outputs(state, batch["pair_h"])
        scale = self.model.sequence.rate_scale
        w = self.cfg.loss
        losses = {"current": log_damage_loss(out["current_log"], obs)}
        losses.update(change_losses(pairs, batch["pair_delta"], batch["pair_rapid"], scale,
                                    w.huber_beta, self.cfg.model.interval_level))
        losses["loss"] = (w.current * losses["current"] + w.delta * losses["delta"]
                          + w.rapid * losses["rapid"] + w.quantile * losses["quantile"])
        if self.model.sequence.change_head is not None:  # model.change_head
            read = self.model.sequence.film_changes(self._sequence_features(), batch)
            losses["change"] = film_change_loss(read, batch["film_change"], batch["visit_change"],
                                                scale, w.huber_beta)
            losses["loss"] = losses["loss"] + w.change * losses["change"]
        if not train:
            self._collect("pairs", torch.stack([
                batch["pair_h"], pairs["delta"], batch["pair_delta"],
                torch.sigmoid(pairs["rapid_logit"]), batch["pair_rapid"], pairs["lo"], pairs["hi"],
            ], -1).float())
            current = torch.expm1(out["current_log"][..., 0])[batch["obs_mask"][..., 0]]
            observed = batch["obs"][..., 0][batch["obs_mask"][..., 0]]
            self._collect("current", torch.stack([current.float(), observed.float()], -1))
        return losses

    def _log_losses(self, losses: dict[str, torch.Tensor], prefix: str, size: int) -> None:
        for name, value in losses.items():
            key = f"{prefix}/loss" if name == "loss" else f"{prefix}/loss_{name}"
            self.log(key, value.detach(), on_step=False, on_epoch=True, sync_dist=True,
                     batch_size=size, prog_bar=name == "loss")

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Each batch's random draws (dropout, augmentation, hidden scores) start from a seed
        # fixed by (train.seed, epoch, batch): a run resumed from a checkpoint repeats exactly
        # what the uninterrupted run did (checkpoints hold no RNG state, and loader start-up
        # draws from the global generator at different moments in a resumed epoch).
        seed = np.random.SeedSequence([self.cfg.train.seed, self.current_epoch, batch_idx])
        torch.manual_seed(int(seed.generate_state(1)[0]))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.stage() == "image":
            losses = self._image_step(batch, train=True)
            size = batch["visit_target"].shape[0]
        else:
            losses = self._sequence_step(batch, train=True)
            size = batch["visit_mask"].shape[0]
        self._add_train_losses(losses, int(size))
        return losses["loss"]

    def _add_train_losses(self, losses: dict[str, torch.Tensor], size: int) -> None:
        """Sum this step's losses: four ``self.log`` calls a step cost ~10% of a tiny model's
        step time; :meth:`_log_train_losses` logs the same batch-size-weighted epoch means."""
        for name, value in losses.items():
            weighted = value.detach().float() * size
            total = self._train_sums.get(name)
            self._train_sums[name] = weighted if total is None else total + weighted
        self._train_count += size

    def _log_train_losses(self) -> None:
        """``train/loss*`` = sum(loss x batch size) / sum(batch size) over every rank's steps,
        what ``self.log(..., on_epoch=True, batch_size=size, sync_dist=True)`` per step gave."""
        if not self._train_sums:
            return
        reduce = self.trainer.strategy.reduce
        count = reduce(torch.tensor(float(self._train_count), device=self.device), reduce_op="sum")
        for name, total in self._train_sums.items():
            key = "train/loss" if name == "loss" else f"train/loss_{name}"
            self.log(key, reduce(total, reduce_op="sum") / count, prog_bar=name == "loss")
        self._train_sums, self._train_count = {}, 0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Lightning validates only in the sequence stage (see on_train_epoch_end).
        losses = self._sequence_step(batch, train=False)
        self._log_losses(losses, "val", int(batch["visit_mask"].shape[0]))

    def on_train_epoch_end(self) -> None:
        """Image-stage validation, run here so that Lightning's validation loop (and callbacks
        watching it, e.g. Optuna pruning on ``val/mae_delta_1y``) only runs when forecasts exist."""
        self._log_train_losses()
        if self.stage() != "image":
            return
        loader = self.trainer.datamodule.image_val_loader()
        if loader is None:
            return
        self._val_rows = {}
        totals: dict[str, float] = {}
        n = 0
        was_training = self.model.training
        self.model.eval()
        bf16 = "bf16" in str(self.trainer.precision)
        with torch.no_grad():
            for batch in loader:
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                    losses = self._image_step(batch, train=False)
                size = int(batch["visit_target"].shape[0])
                for name, value in losses.items():
                    totals[name] = totals.get(name, 0.0) + float(value) * size
                n += size
        self.model.train(was_training)
        mean = {k: torch.tensor(v / max(n, 1), device=self.device) for k, v in totals.items()}
        for name, value in mean.items():
            key = "val/loss" if name == "loss" else f"val/loss_{name}"
            self.log(key, value, sync_dist=True)
        metrics = self._log_val_metrics()
        if self.current_epoch == self.image_epochs - 1 and "val/corr_region" in metrics:
            # How well the finished encoder reads damage: fit warns, the model card says it.
            self.meta.image_reading = {"val_corr_region": round(metrics["val/corr_region"], 3),
                                       "image_epochs": self.image_epochs}

    # ---- validation metrics ----------------------------------------------------------------
    def _collect(self, name: str, rows: torch.Tensor) -> None:
        self._val_rows.setdefault(name, []).append(rows.detach().float())

    def _gathered(self, name: str, width: int) -> np.ndarray:
        """This epoch's rows of ``name`` from every rank, ``[n, width]``."""
        parts = self._val_rows.get(name, [])
        local = torch.cat(parts) if parts else torch.zeros(0, width, device=self.device)
        if self.trainer.world_size > 1:
            sizes = self.all_gather(torch.tensor(local.shape[0], device=self.device)).reshape(-1)
            padded = local.new_full((int(sizes.max()), width), float("nan"))
            padded[: local.shape[0]] = local
            gathered = self.all_gather(padded)
            local = torch.cat([gathered[r, : int(sizes[r])] for r in range(len(sizes))])
        return local.cpu().numpy()

    def on_validation_epoch_start(self) -> None:
        self._val_rows = {}

    def on_validation_epoch_end(self) -> None:
        self._log_val_metrics()

    def _log_val_metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        current = self._gathered("current", 2)
        current = current[np.isfinite(current).all(1)]
        if len(current):
            metrics["val/mae_svdh_current"] = float(np.abs(current[:, 0] - current[:, 1]).mean())
        if self.stage() == "image":
            region = self._gathered("region", 2)
            region = region[np.isfinite(region).all(1)]
            if len(region):
                metrics["val/mae_region"] = float(np.abs(region[:, 0] - region[:, 1]).mean())
                if len(region) > 2 and region[:, 1].std() > 0 and region[:, 0].std() > 0:
                    metrics["val/corr_region"] = float(np.corrcoef(region[:, 0], region[:, 1])[0, 1])
        else:
            pairs = self._gathered("pairs", 7)
            h, pred, obs, prob, rapid, lo, hi = pairs.T
            if len(pairs):
                metrics["val/mae_delta"] = float(np.abs(pred - obs).mean())
                metrics["val/coverage_interval"] = float(((obs >= lo) & (obs <= hi)).mean())
            year = ONE_YEAR_METRIC_WINDOW.contains(h)
            if year.any():
                metrics["val/mae_delta_1y"] = float(np.abs(pred[year] - obs[year]).mean())
                auroc = _auroc(prob[year], rapid[year])
                if math.isfinite(auroc):
                    metrics["val/auroc_rapid_1y"] = auroc
        for key, value in metrics.items():
            self.log(key, value, sync_dist=True)
        self._val_rows = {}
        return metrics

    # ---- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        t = self.cfg.train
        groups, schedules = [], []
        seq_epochs = max(1, t.max_epochs - self.image_epochs)
        if self.model.encoder is not None and self.image_epochs > 0:
            groups.append({"params": list(self.model.encoder.parameters()), "lr": t.image_lr})
            n = self.image_epochs
            schedules.append(lambda e: 0.5 * (1 + math.cos(math.pi * e / n)) if e < n else 0.0)
        groups.append({"params": list(self.model.sequence.parameters()), "lr": t.lr})
        first = self.image_epochs

        def sequence_schedule(e: int) -> float:
            k = max(0, e - first)
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(k, seq_epochs) / seq_epochs))

        schedules.append(sequence_schedule)
        # One fused kernel for all parameters: on CPU the default per-tensor loop took ~5% of
        # a tiny model's step. Not under 16-bit AMP, where Lightning refuses gradient
        # clipping with optimizers that unscale inside step().
        fused = str(t.precision) in ("32-true", "32", "bf16-mixed")
        optimizer = torch.optim.AdamW(groups, weight_decay=t.weight_decay, fused=fused)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedules)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ---- checkpoints -----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = self.meta.to_dict()
