"""Lightning pieces of the staged fit: checkpoints by stage, atomic checkpoint files, strategy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from progression.io import atomic_open

_HIGHER_IS_BETTER = ("auroc", "corr", "coverage")


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


def stage_checkpoint(directory: Path, monitor: str) -> StageCheckpoint:
    """``best.ckpt`` by ``monitor`` (higher is better for AUROC, correlation, coverage) and
    ``last.ckpt`` after every epoch, in ``directory``."""
    return StageCheckpoint(
        dirpath=directory, filename="best", monitor=monitor,
        mode="max" if any(k in monitor for k in _HIGHER_IS_BETTER) else "min",
        save_top_k=1, save_last=True, auto_insert_metric_name=False,
        enable_version_counter=False, save_on_train_epoch_end=True)


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


def strategy(name: str) -> Any:
    """Lightning's strategy for ``train.strategy``."""
    if name == "ddp":
        from pytorch_lightning.strategies import DDPStrategy

        # Each stage leaves the other stage's parameters without gradients.
        return DDPStrategy(find_unused_parameters=True)
    return name
