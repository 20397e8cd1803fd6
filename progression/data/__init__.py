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

from progression.data.arrays import CohortArrays, build_arrays, fit_covariates
from progression.data.covariates import CovariateSpec
from progression.data.split import split_patients

__all__ = ["CohortArrays", "CovariateSpec", "build_arrays", "fit_covariates", "split_patients"]
