"""From a validated cohort to batches: arrays, covariates, splits, datasets, DataModule.

- :mod:`~progression.data.arrays`: the cohort as aligned arrays (visits, images, targets).
- :mod:`~progression.data.covariates`: standardised / embedded covariates with missingness.
- :mod:`~progression.data.split`: patient-level train/val/test split.
- :mod:`~progression.data.horizons`: when two visits measure a change over h years; the past-rate rule.
- :mod:`~progression.data.layout`: the sizes of the model's non-image inputs.
- :mod:`~progression.data.datasets`: the two datasets, collation, length-grouped sampler.
- :mod:`~progression.data.datamodule`: the LightningDataModule of the staged fit.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names are imported on first use, so a light constant (e.g. ``data.horizons``) costs no
# pandas or torch (``progression --help`` reads one).
_EXPORTS = {
    "CohortArrays": "arrays",
    "build_arrays": "arrays",
    "fit_covariates": "arrays",
    "CovariateSpec": "covariates",
    "split_patients": "split",
}
__all__ = ["CohortArrays", "CovariateSpec", "build_arrays", "fit_covariates", "split_patients"]

if TYPE_CHECKING:
    from progression.data.arrays import CohortArrays, build_arrays, fit_covariates
    from progression.data.covariates import CovariateSpec
    from progression.data.split import split_patients


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'progression.data' has no attribute '{name}'")
    return getattr(importlib.import_module(f"progression.data.{_EXPORTS[name]}"), name)
