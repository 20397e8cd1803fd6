"""Subgroup and site results: every evaluation metric within each subgroup, and
leave-one-site-out forecasts.

TRIPOD+AI asks how a model performs across sexes, sites and clinical strata, not only on the
whole cohort. Two calls:

* :func:`subgroup_metrics` takes the per-patient evaluation frame of one horizon (one row per
  patient: observed and predicted change, interval, ``rapid_obs`` / ``p_rapid``, index
  scores, time to event, plus the covariates at the index) and computes every metric of
  :mod:`progression.metrics` whose columns are present, within each level of each
  subgroup variable, with the same patient-bootstrap 95% intervals and the counts behind them.
* :func:`leave_one_site_out` trains on all sites but one and forecasts the left-out site, for
  every site, through a ``fit_predict(train, test)`` callable supplied by the caller (the
  training recipe), so the forecasts of each site come from a model that never saw it.

Subgroup variables (:data:`DEFAULT_SUBGROUPS`, those present are used, plus any the caller
names): ``sex``, ``site``, seropositivity ``rf`` and ``acpa``, ``treatment`` at the index,
baseline damage (``svdh_last``, the last SvdH total read on or before the index, in tertiles)
and the number of scored visits up to the index (``n_scored``), as
:func:`~progression.evaluate.baselines.features_at` names them. A categorical variable gives one
subgroup per level (missing values form the level ``missing``); a numeric one with more than
:data:`MAX_LEVELS` distinct values is cut into tertiles of its values (``tertile 1 [lo, hi]``).

Too small to say anything (the rule, also in docs/evaluation.md): a subgroup of fewer than
:data:`MIN_PATIENTS` patients gets no estimate for any metric; a metric of rapid progression
(AUROC, AUPRC, Brier, calibration) needs at least :data:`MIN_EVENTS` rapid progressors and
:data:`MIN_EVENTS` non-progressors in the subgroup, and Harrell's C at least
:data:`MIN_EVENTS` progression events. Such rows keep their counts, their value and interval
are NaN, and ``note`` says which rule applied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from progression.errors import ProgressionError
from progression.metrics import (
    DELTA_METRICS,
    INDEX_METRICS,
    SURVIVAL_METRICS,
    Metric,
    bootstrap_counts,
    compute,
)

DEFAULT_SUBGROUPS = ("sex", "site", "rf", "acpa", "treatment", "svdh_last", "n_scored")
MIN_PATIENTS = 30
MIN_EVENTS = 5
MAX_LEVELS = 5
ALL_METRICS: tuple[Metric, ...] = (*DELTA_METRICS, *INDEX_METRICS, *SURVIVAL_METRICS)
COLUMNS = ("variable", "level", "metric", "value", "ci_lo", "ci_hi", "n", "n_rapid", "n_events",
           "note")


def subgroup_levels(values: pd.Series) -> pd.Series:
    """The subgroup label of each row: the level itself, ``missing``, or a tertile label.

    Numeric columns with more than :data:`MAX_LEVELS` distinct values are cut into tertiles
    of their values (ties stay together, so a tertile may hold more than a third).
    """
    numeric = pd.to_numeric(values, errors="coerce")
    is_numeric = numeric.notna().sum() == values.notna().sum() and values.notna().any()
    if is_numeric and numeric.nunique() > MAX_LEVELS:
        tertile = pd.qcut(numeric.rank(method="min"), 3, labels=False, duplicates="drop")
        labels = pd.Series("missing", index=values.index, dtype=object)
        for k in sorted(tertile.dropna().unique()):
            part = numeric[tertile == k]
            labels[tertile == k] = f"tertile {int(k) + 1} [{part.min():g}, {part.max():g}]"
        return labels
    text = numeric.map(lambda v: f"{v:g}") if is_numeric else values.astype(str).str.strip()
    return text.where(values.notna(), "missing")


def _binary_count(frame: pd.DataFrame, column: str) -> tuple[int, int]:
    if column not in frame.columns:
        return 0, 0
    values = pd.to_numeric(frame[column], errors="coerce").dropna()
    return int((values == 1).sum()), int((values == 0).sum())


def _too_small(metric: Metric, n: int, rapid: tuple[int, int], events: int) -> str:
    """Why ``metric`` says nothing in a subgroup with these counts ('' when it does)."""
    if n < MIN_PATIENTS:
        return f"fewer than {MIN_PATIENTS} patients"
    if "rapid_obs" in metric.columns and min(rapid) < MIN_EVENTS:
        return f"fewer than {MIN_EVENTS} rapid progressors or non-progressors"
    if "event" in metric.columns and events < MIN_EVENTS:
        return f"fewer than {MIN_EVENTS} progression events"
    return ""


def subgroup_metrics(
    frame: pd.DataFrame,
    by: Sequence[str] | None = None,
    metrics: Sequence[Metric] = ALL_METRICS,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every metric within every subgroup, with patient-bootstrap 95% CIs and counts.

    Parameters
    ----------
    frame
        One horizon's evaluation frame, one row per patient (``patient_id`` unique when
        present), with the metric columns (see :mod:`progression.metrics`) and the
        subgroup columns.
    by
        Subgroup columns; default: those of :data:`DEFAULT_SUBGROUPS` present in ``frame``.
        Named columns must exist.
    metrics, n_boot, seed
        The metrics to compute; bootstrap resamples and seed. One ``(n_boot, n)`` resample
        matrix over all patients is drawn once, and each subgroup's interval uses its
        patients' columns of it (the bootstrap of the whole cohort, read within the subgroup).

    Returns
    -------
    DataFrame with :data:`COLUMNS`: ``variable`` and ``level`` name the subgroup, ``n`` the
    patients the metric used, ``n_rapid`` the rapid progressors and ``n_events`` the
    progression events in the subgroup, ``note`` why a metric was not estimated (module
    docstring). Rows are ordered by variable, level and the order of ``metrics``.
    """
    if "patient_id" in frame.columns and frame["patient_id"].duplicated().any():
        dup = frame.loc[frame["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise ProgressionError(
            f"subgroup metrics: patient {dup} has more than one row; give one horizon's "
            "frame (one row per patient)"
        )
    if by is None:
        by = [c for c in DEFAULT_SUBGROUPS if c in frame.columns]
    missing = [c for c in by if c not in frame.columns]
    if missing:
        raise ProgressionError(
            f"subgroup column(s) {', '.join(missing)} are not in the evaluation frame; "
            f"its columns are {', '.join(map(str, frame.columns))}"
        )
    frame = frame.reset_index(drop=True)
    counts = bootstrap_counts(len(frame), n_boot, seed)
    rows: list[dict[str, Any]] = []
    for variable in by:
        labels = subgroup_levels(frame[variable])
        for level in sorted(labels.unique(), key=str):
            where = np.flatnonzero((labels == level).to_numpy())
            part = frame.iloc[where]
            rapid = _binary_count(part, "rapid_obs")
            events = _binary_count(part, "event")[0]
            estimable = [m for m in metrics if all(c in part.columns for c in m.columns)]
            reasons = {m.name: _too_small(m, len(part), rapid, events) for m in estimable}
            estimates = compute([m for m in estimable if not reasons[m.name]], part, counts,
                                where)
            for metric in estimable:
                est = estimates.get(metric.name)
                used = int(part[list(metric.columns)].apply(pd.to_numeric, errors="coerce")
                           .notna().all(axis=1).sum())
                rows.append({
                    "variable": variable, "level": level, "metric": metric.name,
                    "value": est.value if est else np.nan,
                    "ci_lo": est.lo if est else np.nan,
                    "ci_hi": est.hi if est else np.nan,
                    "n": used, "n_rapid": rapid[0], "n_events": events,
                    "note": reasons[metric.name],
                })
    return pd.DataFrame(rows, columns=list(COLUMNS))


def site_names(cohort: Any, site_column: str = "site") -> list[str]:
    """The sorted site labels of ``cohort.patients[site_column]`` (missing values left out)."""
    patients = cohort.patients
    if site_column not in patients.columns:
        raise ProgressionError(
            f"leave-one-site-out needs a '{site_column}' column in patients.csv; the columns "
            f"are {', '.join(map(str, patients.columns))}"
        )
    return sorted(patients[site_column].dropna().astype(str).unique())


def leave_one_site_out(
    cohort: Any,
    fit_predict: Callable[[Any, Any], pd.DataFrame],
    site_column: str = "site",
    training: Any = None,
) -> pd.DataFrame:
    """Forecasts of every site by a model trained on the other sites.

    ``cohort`` has a ``patients`` table with ``site_column`` and a ``subset(patient_ids)``
    method (:class:`~progression.cohort.Cohort`). For each site ``s``,
    ``fit_predict(train, test)`` is called with the training cohort without ``s`` and the
    cohort of ``s`` only, and must return a predictions table of the ``test`` patients (the
    columns of docs/architecture.md). ``training`` is the cohort to train on (default:
    ``cohort`` itself); its patients of site ``s`` are left out of fold ``s``. Returns the
    tables of all sites stacked, with the left-out site in ``held_out_site``; evaluate it
    against the outcomes like any predictions table, and pass ``by=["held_out_site"]`` to
    :func:`subgroup_metrics` for a per-site table.
    """
    training = cohort if training is None else training
    site_names(training, site_column)  # the training cohort must name sites too
    names = site_names(cohort, site_column)
    patients = cohort.patients
    sites = patients[site_column].dropna().astype(str)
    if len(names) < 2:
        raise ProgressionError(
            f"leave-one-site-out needs at least 2 sites in '{site_column}' (found "
            f"{len(names)}: {', '.join(names) or 'none'})"
        )
    ids = patients.loc[sites.index, "patient_id"].astype(str)
    trained = training.patients
    train_sites = trained[site_column].astype(str).where(trained[site_column].notna())
    parts = []
    for site in names:
        inside = ids[sites == site].tolist()
        outside = trained.loc[train_sites.notna() & (train_sites != site), "patient_id"]
        table = fit_predict(training.subset(outside.astype(str).tolist()), cohort.subset(inside))
        strays = set(table["patient_id"].astype(str)) - set(inside)
        if strays:
            raise ProgressionError(
                f"leave-one-site-out: fit_predict returned forecasts for {len(strays)} patient(s) "
                f"outside the left-out site {site} (e.g. {sorted(strays)[0]}); it must forecast "
                "its test cohort only"
            )
        parts.append(table.assign(held_out_site=site))
    return pd.concat(parts, ignore_index=True)
