"""The pruning callback: reports each validation epoch, stops a diverging fit, and is DDP-safe."""

from __future__ import annotations

import optuna
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from progression.tuning.pruning import OptunaPruning
from progression.tuning.storage import open_storage


class _Regression(pl.LightningModule):
    """y = sum(x): SGD with a sane learning rate converges, with lr=10 it diverges."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val/mae", (self.net(x) - y).abs().mean(), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _fit(module: pl.LightningModule, callback: OptunaPruning, **trainer_kwargs) -> pl.Trainer:
    torch.manual_seed(0)
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(x, x.sum(1, keepdim=True))
    trainer = pl.Trainer(
        max_epochs=4,
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(module, DataLoader(data, batch_size=16), DataLoader(data, batch_size=32))
    return trainer


@pytest.fixture()
def study(tmp_path):
    # Anything with mae above 100 is pruned; a sane fit stays far below.
    return optuna.create_study(
        storage=open_storage(str(tmp_path / "study.journal")),
        pruner=optuna.pruners.ThresholdPruner(upper=100.0),
    )


def test_converging_fit_reports_every_epoch_and_is_not_pruned(study):
    trial = study.ask()
    callback = OptunaPruning(trial, "val/mae")
    trainer = _fit(_Regression(0.05), callback, devices=1)
    assert trainer.current_epoch == 4
    assert not callback.pruned
    reports = study.trials[0].intermediate_values
    assert sorted(reports) == [0, 1, 2, 3]
    assert reports[3] < reports[0] < 100.0


def test_diverging_fit_is_stopped_after_its_first_epoch_and_marked_pruned(study):
    trial = study.ask()
    callback = OptunaPruning(trial, "val/mae")
    trainer = _fit(_Regression(10.0), callback, devices=1)
    assert callback.pruned_epoch == 0
    assert trainer.current_epoch == 1  # 3 of 4 epochs saved
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 0: val/mae="):
        callback.raise_if_pruned()
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED


def test_epochs_without_the_metric_are_not_reported(study):
    # Like the image stage of a staged fit: no forecasts yet, so no forecast metric.
    class LateMetric(_Regression):
        def validation_step(self, batch, _):
            if self.current_epoch >= 2:
                super().validation_step(batch, _)

    trial = study.ask()
    callback = OptunaPruning(trial, "val/mae")
    _fit(LateMetric(0.05), callback, devices=1)
    assert sorted(study.trials[0].intermediate_values) == [2, 3]
    assert not callback.pruned


@pytest.mark.timeout(120)
def test_ddp_ranks_stop_together_and_the_launcher_sees_the_pruning(study):
    # Two CPU ranks (gloo, forked: the callback runs in child processes as under ddp_spawn).
    # Rank 0 alone reports; if rank 1 did not get its decision it would keep training and
    # the fit would hang in the next all-reduce.
    trial = study.ask()
    callback = OptunaPruning(trial, "val/mae")
    _fit(_Regression(10.0), callback, devices=2, strategy="ddp_fork")
    assert list(study.trials[0].intermediate_values) == [0]  # one report, from rank 0 only
    assert callback.pruned  # decided from the storage in this (launching) process
    assert callback.pruned_epoch == 0
