"""Optuna pruning inside a Lightning fit, in the ``pytorch_lightning`` namespace.

``optuna-integration``'s callback imports ``lightning.pytorch``; mixing the two namespaces
in one Trainer fails, so this is a small callback of our own. Each validation epoch the
monitored metric is reported to the trial; when the pruner says so the Trainer stops, and
the caller raises :class:`optuna.TrialPruned` after ``fit`` returns (raising inside the
Trainer would leave the MLflow run and checkpoint half-written).

Steps are epochs counted from the start of the fit. Epochs that do not log the metric
(the image stage of a staged fit has no forecasts, so no ``val/mae_delta_1y``) report
nothing and are never pruned.

DDP: only global rank 0 talks to the Optuna storage. Its decision (continue / prune) is
broadcast with ``trainer.strategy.broadcast`` so every rank stops at the same epoch; a rank
that stopped alone would hang the others in the next collective. Under ``ddp_spawn`` the
callback runs in child processes, so afterwards the launching process asks the storage
(where rank 0 wrote the reports) whether the trial was pruned.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl

_CONTINUE, _PRUNE = 0, 1


class OptunaPruning(pl.Callback):
    """Report ``monitor`` (e.g. ``val/mae_delta_1y``, SvdH units) per epoch; stop when pruned.

    ``trial`` may be None on ranks other than 0. After ``fit``, :attr:`pruned_epoch` is the
    epoch (0-based) at which the trial was pruned, or None.
    """

    def __init__(self, trial: Any, monitor: str) -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.pruned_epoch: int | None = None
        self.last_value: float | None = None
        self.reported_here = False  # False after ddp_spawn: the reports came from children

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        decision = _CONTINUE
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.is_global_zero and value is not None:
            self.last_value = float(value)
            self.trial.report(self.last_value, step=epoch)
            self.reported_here = True
            if self.trial.should_prune():
                decision = _PRUNE
        decision = trainer.strategy.broadcast(decision, src=0)
        if decision == _PRUNE:
            self.pruned_epoch = epoch
            trainer.should_stop = True

    @property
    def pruned(self) -> bool:
        """Whether the pruner stopped the fit (call after ``fit`` returns, in the trial's process)."""
        if self.reported_here or self.trial is None:
            return self.pruned_epoch is not None
        # Trial.should_prune() would use this process's cached copy, which has no reports.
        study = self.trial.study
        frozen = study._storage.get_trial(self.trial._trial_id)
        if not frozen.intermediate_values or not study.pruner.prune(study, frozen):
            return False
        self.pruned_epoch = max(frozen.intermediate_values)
        self.last_value = frozen.intermediate_values[self.pruned_epoch]
        return True

    def raise_if_pruned(self) -> None:
        """Raise :class:`optuna.TrialPruned` if the pruner stopped this fit."""
        import optuna

        if self.pruned:
            value = "nan" if self.last_value is None or math.isnan(self.last_value) else f"{self.last_value:.4g}"
            raise optuna.TrialPruned(f"pruned after epoch {self.pruned_epoch}: {self.monitor}={value}")
