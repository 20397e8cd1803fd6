"""Training: ``fit(cfg) -> FitResult``, one Lightning Trainer and one MLflow run per fit.

- :mod:`~progression.train.fitting`: :func:`fit` as a recipe of named steps.
- :mod:`~progression.train.callbacks`: checkpoints by stage, atomic checkpoint files.
- :mod:`~progression.train.finalize`: after the fit: calibration, model card, artifacts, model.
- :mod:`~progression.train.model_card`: the markdown model card written for each model.
"""

from __future__ import annotations

from progression.train.fitting import FitResult, fit

__all__ = ["FitResult", "fit"]
