"""The forecasts :func:`~progression.evaluate.report.evaluate` scores, and what it scores them on.

The cohort to score (a checkpoint's own training cohort: its test split only) and the one to
fit the baselines on (the checkpoint's training split, else cross-fitting), the outcomes of
the cohort's patients, the model's predictions table (given, or predicted from a checkpoint
at the outcomes' index dates) and every baseline's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from progression.cohort import Cohort
from progression.data.outcomes import OutcomeRule, derive_outcomes
from progression.errors import ProgressionError
from progression.evaluate.baselines import Oracle, make_baseline
from progression.evaluate.inputs import (
    as_index_dates,
    load_cohort,
    read_outcomes,
    read_predictions,
)

if TYPE_CHECKING:
    from progression.models.checkpoint import CheckpointMeta

log = logging.getLogger(__name__)
CROSS_FIT_FOLDS = 5


def as_frame(value: pd.DataFrame | str | Path, reader: Any) -> pd.DataFrame:
    return value.copy() if isinstance(value, pd.DataFrame) else reader(value)


def normalise_predictions(frame: pd.DataFrame, method: str) -> pd.DataFrame:
    frame = frame.copy()
    frame["patient_id"] = frame["patient_id"].astype(str)
    frame["index_date"] = pd.to_datetime(frame["index_date"])
    frame["horizon_years"] = frame["horizon_years"].astype(float)
    twice = frame.duplicated(["patient_id", "horizon_years"], keep=False)
    if twice.any():
        first = frame[twice].iloc[0]
        raise ProgressionError(
            f"{method} predictions have {int(twice.sum())} rows for a patient and horizon seen "
            f"more than once, e.g. patient {first['patient_id']} at "
            f"{first['horizon_years']:g} years; keep one row per patient x horizon"
        )
    return frame


def check_index_dates(predictions: pd.DataFrame, outcomes: pd.DataFrame, method: str) -> None:
    """Forecast origin and outcome origin must agree, else the comparison is meaningless."""
    pairs = predictions[["patient_id", "index_date"]].drop_duplicates("patient_id").merge(
        outcomes[["patient_id", "index_date"]].drop_duplicates("patient_id"),
        on="patient_id", suffixes=("_pred", "_obs"),
    )
    if pairs.empty:
        raise ProgressionError(
            f"{method} predictions share no patient_id with the outcomes; predict for the same "
            "cohort you evaluate on"
        )
    bad = pairs[pairs["index_date_pred"] != pairs["index_date_obs"]]
    if not bad.empty:
        first = bad.iloc[0]
        raise ProgressionError(
            f"{method} predictions start from a different index_date than the outcomes for "
            f"{len(bad)} patient(s), e.g. patient {first['patient_id']}: "
            f"{first['index_date_pred']:%Y-%m-%d} vs {first['index_date_obs']:%Y-%m-%d}; "
            "predict from the outcomes' index dates (evaluate with --checkpoint does this)"
        )


def is_checkpoint(source: Any) -> bool:
    return source is not None and not isinstance(source, pd.DataFrame) and (
        Path(str(source)).suffix.lower() != ".csv")


def model_predictions(source: Any, cohort: Cohort, outcomes: pd.DataFrame,
                       horizons: Sequence[float], progress: bool,
                       tracking_uri: str | None) -> pd.DataFrame:
    """A predictions table from a DataFrame, a predictions CSV, or a checkpoint (predicted)."""
    if not is_checkpoint(source):
        return as_frame(source, read_predictions)
    from progression.predict import predict_cohort

    if cohort.root is None:
        raise ProgressionError("evaluating a checkpoint needs the cohort as a directory")
    index = as_index_dates(outcomes, cohort)
    return predict_cohort(source, cohort.root, horizons=tuple(horizons), index_dates=index,
                          progress=progress, tracking_uri=tracking_uri)


@dataclass
class CheckpointData:
    """What a checkpoint records about its training data (``progression train`` writes it).

    ``cohort_path``: the training cohort's directory as recorded: its name only unless the
    model was trained with ``tracking.share_identifiers=true`` (then the absolute path);
    ``meta``: the checkpoint's metadata, whose split is read with
    :meth:`~progression.models.checkpoint.CheckpointMeta.split_of`.
    """

    cohort_path: Path
    fingerprint: str | None
    meta: CheckpointMeta


def checkpoint_data(checkpoint: str | Path, tracking_uri: str | None = None) -> CheckpointData:
    """The training cohort directory, its fingerprint and the metadata of a checkpoint."""
    from progression.trained import load_trained

    trained = load_trained(checkpoint, tracking_uri)
    return CheckpointData(cohort_path=Path(trained.config.data.path),
                          fingerprint=trained.meta.cohort_fingerprint, meta=trained.meta)


def training_cohort_of(checkpoint: str | Path, tracking_uri: str | None = None
                       ) -> Cohort | None:
    """The training split of the cohort a checkpoint was fitted on, or None when that cohort
    directory cannot be found (then the baselines are cross-fitted instead).

    A checkpoint keeps only the directory's name (unless trained with
    ``tracking.share_identifiers=true``): it is found when it is the working directory's
    ``<name>`` and has the recorded fingerprint; otherwise pass the training cohort
    (``--train-data``).
    """
    data = checkpoint_data(checkpoint, tracking_uri)
    if not data.meta.split.get("train") or not (data.cohort_path / "patients.csv").is_file():
        return None
    try:
        cohort = load_cohort(data.cohort_path)
    except ProgressionError as exc:
        log.warning("training cohort %s of the checkpoint cannot be read (%s)",
                    data.cohort_path, str(exc).splitlines()[0])
        return None
    if data.fingerprint and cohort.fingerprint != data.fingerprint:
        log.warning("%s is not the cohort the checkpoint was trained on (its fingerprint "
                    "differs); the baselines are cross-fitted", data.cohort_path)
        return None
    return cohort.subset(data.meta.split_of(cohort.patient_ids)["train"])


def evaluation_cohorts(source: Any, cohort: Any, train_cohort: Any, tracking_uri: str | None
                        ) -> tuple[Cohort, Cohort | None]:
    """The cohort to score (a checkpoint's own training cohort: its test split only) and the
    cohort to fit the baselines on (None: cross-fitting)."""
    tables = load_cohort(cohort)
    train = load_cohort(train_cohort) if train_cohort is not None else None
    if is_checkpoint(source):
        recorded = checkpoint_data(source, tracking_uri)
        if tables.fingerprint and tables.fingerprint == recorded.fingerprint:
            # The model trained on part of this very cohort: score its test patients only.
            split = recorded.meta.split_of(tables.patient_ids)
            held_out = split.get("test") or []
            if not held_out:
                raise ProgressionError(
                    "the cohort is the one the checkpoint was trained on and it records no "
                    "test split; evaluate on another cohort or train with data.test_fraction > 0"
                )
            log.info("evaluating the checkpoint's %d test-split patients", len(held_out))
            if train is None and split.get("train"):
                train = tables.subset(split["train"])
            tables = tables.subset(held_out)
        if train is None:
            train = training_cohort_of(source, tracking_uri)
    return tables, train


def matched_outcomes(outcomes: pd.DataFrame | str | Path | None, tables: Cohort,
                      rule: OutcomeRule) -> pd.DataFrame:
    """The outcomes table (given, or derived from the cohort with ``rule``) of the cohort's patients."""
    if outcomes is None:
        outcomes = derive_outcomes(tables, rule)
    outcomes = as_frame(outcomes, read_outcomes)
    outcomes["patient_id"] = outcomes["patient_id"].astype(str)
    outcomes["index_date"] = pd.to_datetime(outcomes["index_date"])
    outcomes = outcomes[outcomes["patient_id"].isin(tables.patients["patient_id"])]
    if outcomes.empty:
        raise ProgressionError(
            "no outcome row matches a patient of the cohort; check that --outcomes and --data "
            "describe the same patients"
        )
    return outcomes


def model_forecasts(source: Any, tables: Cohort, outcomes: pd.DataFrame,
                     horizons: tuple[float, ...], model_name: str, progress: bool,
                     tracking_uri: str | None) -> pd.DataFrame:
    """The model's predictions table, checked to start from the outcomes' index dates."""
    model = normalise_predictions(
        model_predictions(source, tables, outcomes, horizons, progress, tracking_uri),
        model_name,
    )
    check_index_dates(model, outcomes, model_name)
    return model


def baseline_forecasts(methods: dict[str, pd.DataFrame], baselines: Sequence[str] | None,
                        tables: Cohort, train: Cohort | None,
                        outcomes: pd.DataFrame, index_dates: pd.Series,
                        horizons: tuple[float, ...], seed: int, progress: bool) -> dict[str, str]:
    """Add each baseline's predictions to ``methods`` (fitted on ``train``, else cross-fitted);
    returns the baselines skipped, with why. Raises when there is nothing to evaluate."""
    skipped: dict[str, str] = {}
    for name in tqdm(list(baselines or ()), desc="baselines", disable=not progress):
        try:
            if name == "oracle" or train is not None:
                baseline = make_baseline(name)
                if not isinstance(baseline, Oracle):
                    baseline.fit(train)
                predictions = baseline.predict(tables, horizons, index_dates)
            else:
                predictions = cross_fit(name, tables, horizons, index_dates,
                                        folds=CROSS_FIT_FOLDS, seed=seed)
        except ProgressionError as exc:
            log.warning("baseline %s skipped: %s", name, exc)
            skipped[name] = str(exc)
            continue
        predictions = normalise_predictions(predictions, name)
        methods[name] = predictions[predictions["patient_id"].isin(outcomes["patient_id"])]
    if not methods:
        raise ProgressionError(f"nothing to evaluate: no predictions and every baseline was "
                               f"skipped ({'; '.join(skipped.values()) or 'none asked for'})")
    return skipped


def cross_fit(
    name: str,
    cohort: Cohort,
    horizons: Sequence[float],
    index_dates: pd.Series,
    folds: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Predictions of baseline ``name`` for every patient of ``cohort`` by K-fold cross-fitting.

    Used when no training cohort is given: patients are split into ``folds`` random groups
    (seeded); each group is predicted by the baseline fitted on the other groups, so no
    patient's own outcome is ever in its baseline's training data.
    """
    ids = np.array(cohort.patient_ids)
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(np.arange(len(ids)) % max(2, min(folds, len(ids))))
    parts = []
    for fold in np.unique(fold_of):
        test_ids = ids[fold_of == fold]
        model = make_baseline(name).fit(cohort.subset(ids[fold_of != fold]))
        test_index = index_dates[index_dates.index.isin(test_ids)]
        parts.append(model.predict(cohort.subset(test_ids), horizons, test_index))
    return pd.concat(parts, ignore_index=True).sort_values(["patient_id", "horizon_years"],
                                                           ignore_index=True)
