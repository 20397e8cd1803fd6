"""Covariates as model inputs: standardised numbers and embedded categories, with missingness.

Every covariate becomes a (value, mask) pair so "not measured" is never confused with an
average value. Numeric covariates are standardised with the mean and standard deviation of
the TRAINING patients only (no information from validation or test patients leaks in);
categorical covariates get integer codes with two reserved rows: 0 = missing, 1 = a level
never seen in training. The fitted :class:`CovariateSpec` is a plain dict in the checkpoint,
so a forecast on a new cohort uses exactly the training statistics.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

MISSING_CODE = 0
UNKNOWN_CODE = 1


@dataclass
class NumericCovariate:
    name: str
    mean: float
    std: float


@dataclass
class CategoricalCovariate:
    name: str
    levels: list[str]

    @property
    def size(self) -> int:
        """Embedding rows: the levels plus the missing and unknown rows."""
        return len(self.levels) + 2


@dataclass
class CovariateSpec:
    """Which covariates the model reads and how (fitted on the training split)."""

    static_numeric: list[NumericCovariate] = field(default_factory=list)
    static_categorical: list[CategoricalCovariate] = field(default_factory=list)
    visit_numeric: list[NumericCovariate] = field(default_factory=list)
    visit_categorical: list[CategoricalCovariate] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CovariateSpec:
        return cls(
            static_numeric=[NumericCovariate(**d) for d in data["static_numeric"]],
            static_categorical=[CategoricalCovariate(**d) for d in data["static_categorical"]],
            visit_numeric=[NumericCovariate(**d) for d in data["visit_numeric"]],
            visit_categorical=[CategoricalCovariate(**d) for d in data["visit_categorical"]],
        )

    @classmethod
    def fit(cls, patients: pd.DataFrame, visits: pd.DataFrame, static: list[str],
            per_visit: list[str], categorical: Collection[str] | None = None) -> CovariateSpec:
        """Statistics from training rows of the ``static`` and ``per_visit`` columns.

        Columns named in ``categorical`` get levels, the others mean and standard deviation.
        The kinds are the cohort schema's (``progression.cohort.CohortSchema``, decided once
        when the cohort is read), never re-guessed from a split's values. ``None``: the
        frames' dtypes carry them (a Cohort stores numeric covariates as float, categorical
        ones as text), so columns of a non-numeric dtype are categorical.
        """
        if categorical is None:
            categorical = {
                name
                for frame in (patients, visits)
                for name in frame.columns
                if not pd.api.types.is_numeric_dtype(frame[name])
            }
        s_num, s_cat = _fit_columns(patients, static, categorical)
        v_num, v_cat = _fit_columns(visits, per_visit, categorical)
        return cls(s_num, s_cat, v_num, v_cat)

    def transform_static(self, patients: pd.DataFrame) -> dict[str, np.ndarray]:
        """``static_num``/``static_num_mask`` float32 ``[n, k]``, ``static_cat`` int64 ``[n, c]``."""
        return _transform(patients, self.static_numeric, self.static_categorical, "static")

    def transform_visits(self, visits: pd.DataFrame) -> dict[str, np.ndarray]:
        """``visit_num``/``visit_num_mask`` float32 ``[n, k]``, ``visit_cat`` int64 ``[n, c]``."""
        return _transform(visits, self.visit_numeric, self.visit_categorical, "visit")


def _numbers(values: pd.Series) -> pd.Series:
    if values.dtype.kind in "biuf":
        return values.astype(float)
    return pd.to_numeric(values.astype("string").str.strip(), errors="coerce").astype(float)


def _fit_columns(frame: pd.DataFrame, columns: list[str], categorical_names: Collection[str]):
    numeric, categorical = [], []
    for name in columns:
        values = frame[name] if name in frame.columns else pd.Series([], dtype=float)
        if name not in categorical_names:
            x = _numbers(values).dropna()
            mean = float(x.mean()) if len(x) else 0.0
            std = float(x.std(ddof=0)) if len(x) > 1 else 1.0
            numeric.append(NumericCovariate(name, mean, std if np.isfinite(std) and std > 0 else 1.0))
        else:
            text = values.dropna().astype(str).str.strip()
            categorical.append(CategoricalCovariate(name, sorted(set(text[text != ""]))))
    return numeric, categorical


def _transform(frame: pd.DataFrame, numeric: list[NumericCovariate],
               categorical: list[CategoricalCovariate], prefix: str) -> dict[str, np.ndarray]:
    n = len(frame)
    num = np.zeros((n, len(numeric)), dtype=np.float32)
    mask = np.zeros((n, len(numeric)), dtype=np.float32)
    for k, cov in enumerate(numeric):
        if cov.name not in frame.columns:
            continue  # a cohort without this covariate: all missing
        x = _numbers(frame[cov.name]).to_numpy()
        ok = np.isfinite(x)
        num[ok, k] = (x[ok] - cov.mean) / cov.std
        mask[ok, k] = 1.0
    cat = np.full((n, len(categorical)), MISSING_CODE, dtype=np.int64)
    for k, cov in enumerate(categorical):
        if cov.name not in frame.columns:
            continue
        codes = {level: i + 2 for i, level in enumerate(cov.levels)}
        text = frame[cov.name].astype("string").str.strip()
        cat[:, k] = [
            MISSING_CODE if pd.isna(v) or v == "" else codes.get(v, UNKNOWN_CODE) for v in text
        ]
    return {f"{prefix}_num": num, f"{prefix}_num_mask": mask, f"{prefix}_cat": cat}
