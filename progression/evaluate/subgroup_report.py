"""The subgroup and leave-one-site-out sections of the evaluation report.

:func:`subgroup_section` reads every metric of the model (without one: of every method)
within each subgroup of the evaluated patients (:mod:`progression.subgroups` does
the maths and says when a subgroup is too small); :func:`site_section` scores each site with
methods that never trained on it. What is retrained there, and what is not:

* the learned baselines (``cohort_mean``, ``linear``, ``clinical_matrix``, ``covariates``) are
  refitted for every left-out site on the other sites' patients of the training cohort (the
  one ``evaluate`` fits the baselines on; without one, the evaluation cohort itself);
* the oracle is not trained (it reads the simulator's truth): its per-site rows are a ceiling;
* the model is NOT retrained (a training run per site is too slow for an evaluation): given
  as a checkpoint, its forecasts of the sites that none of its training or validation patients
  came from are out-of-site results and are reported; sites it saw are left out of this section
  (their results are in the subgroup table). A predictions table says nothing of its training
  data, so it is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from progression.cohort import Cohort
from progression.data.features import features_at
from progression.data.outcomes import scored_rows
from progression.errors import ProgressionError
from progression.evaluate.baselines import make_baseline
from progression.evaluate.forecasts import checkpoint_data, is_checkpoint
from progression.evaluate.inputs import horizon_label
from progression.evaluate.survival import survival_frame
from progression.io import atomic_write_csv
from progression.metrics import DELTA_METRICS, INDEX_METRICS, SURVIVAL_METRICS
from progression.scoring import RAPID_RATE
from progression.subgroups import (
    DEFAULT_SUBGROUPS,
    MIN_EVENTS,
    MIN_PATIENTS,
    leave_one_site_out,
    site_names,
    subgroup_levels,
    subgroup_metrics,
)

log = logging.getLogger(__name__)

VARIABLE_LABELS = {
    "sex": "sex",
    "site": "site",
    "rf": "rheumatoid factor (RF)",
    "acpa": "anti-CCP antibodies (ACPA)",
    "treatment": "treatment at the index visit",
    "svdh_last": "baseline damage: last SvdH total read up to the index",
    "n_scored": "scored visits up to the index",
    "held_out_site": "left-out site",
}
# the columns of the report's readable tables; metrics.json and subgroups.csv hold every metric
HORIZON_COLUMNS = ("mae_delta", "bias_delta", "coverage_delta", "auroc_rapid", "brier_rapid")
OVERALL_COLUMNS = ("cindex_event", "mae_index")
COLUMN_LABELS = {
    "mae_delta": "MAE of change", "bias_delta": "bias of change",
    "coverage_delta": "interval coverage", "auroc_rapid": "AUROC rapid",
    "brier_rapid": "Brier rapid", "cindex_event": "Harrell's C", "mae_index": "MAE current score",
}
ROW_COLUMNS = ("method", "horizon_years", "variable", "level", "metric", "value", "ci_lo",
               "ci_hi", "n", "n_rapid", "n_events", "note")


def index_covariates(tables: Cohort, outcomes: pd.DataFrame) -> pd.DataFrame:
    """What was known of each evaluated patient at the index: ``features_at`` columns."""
    index = outcomes.drop_duplicates("patient_id")
    at = pd.DataFrame({"patient_id": index["patient_id"].to_numpy(),
                       "date": index["index_date"].to_numpy()})
    return features_at(tables, at).drop(columns="date")


def subgroup_columns(covariates: pd.DataFrame, extra: Sequence[str] = ()) -> list[str]:
    """The default subgroup variables present, plus ``extra`` (``--subgroups``), checked."""
    missing = [c for c in extra if c not in covariates.columns]
    if missing:
        known = [c for c in covariates.columns if c != "patient_id"]
        raise ProgressionError(
            f"--subgroups: {', '.join(missing)} is not a covariate of the cohort; name a column "
            f"of patients.csv or visits.csv (known at the index: {', '.join(known)})"
        )
    chosen = [c for c in DEFAULT_SUBGROUPS if c in covariates.columns]
    return chosen + [c for c in extra if c not in chosen]


def patient_frames(predictions: pd.DataFrame, outcomes: pd.DataFrame,
                   horizons: Sequence[float], index_scores: pd.DataFrame | None = None,
                   rapid_rate: float = RAPID_RATE) -> dict[float | None, pd.DataFrame]:
    """One row per patient: per horizon (change, interval, rapid) and, under ``None``, the
    horizon-free columns (time to event; current score when ``index_scores`` are given)."""
    frames: dict[float | None, pd.DataFrame] = {h: scored_rows(predictions, outcomes, h,
                                                                   rapid_rate)
                                                for h in horizons}
    overall = survival_frame(predictions, outcomes)
    if index_scores is not None:
        first = predictions.sort_values("horizon_years").drop_duplicates("patient_id")
        current = first[["patient_id", "svdh_index_pred"]].merge(index_scores, on="patient_id")
        overall = overall.merge(current, on="patient_id", how="outer")
    frames[None] = overall
    return frames


def _grouped(frames: dict[float | None, pd.DataFrame], groups: pd.DataFrame, by: Sequence[str],
             method: str, n_boot: int, seed: int) -> pd.DataFrame:
    """``subgroup_metrics`` of every frame, the change metrics per horizon, the rest once."""
    parts = []
    for h, frame in frames.items():
        if frame.empty:
            continue
        metrics = DELTA_METRICS if h is not None else (*INDEX_METRICS, *SURVIVAL_METRICS)
        data = frame.drop(columns=[c for c in by if c in frame.columns]).merge(
            groups[["patient_id", *by]], on="patient_id", how="left")
        table = subgroup_metrics(data, by=by, metrics=metrics, n_boot=n_boot, seed=seed)
        parts.append(table.assign(method=method, horizon_years=h))
    return _stack(parts)


def _stack(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Tables of :data:`ROW_COLUMNS` stacked (row by row: all-NaN columns keep their type)."""
    return pd.DataFrame([r for part in parts for r in part.to_dict("records")],
                        columns=list(ROW_COLUMNS))


def subgroup_section(methods: dict[str, pd.DataFrame], model_key: str | None,
                     outcomes: pd.DataFrame, covariates: pd.DataFrame,
                     index_scores: pd.DataFrame, horizons: Sequence[float],
                     by: Sequence[str], n_boot: int, seed: int, rapid_rate: float = RAPID_RATE
                     ) -> tuple[dict, pd.DataFrame]:
    """The subgroup results (``metrics.json``'s ``subgroups``) and their tidy table; ``by``
    from :func:`subgroup_columns`."""
    chosen = [model_key] if model_key else list(methods)
    tables = [
        _grouped(patient_frames(methods[m], outcomes, horizons,
                                index_scores if m == model_key else None, rapid_rate),
                 covariates, by, m, n_boot, seed)
        for m in chosen
    ]
    table = _stack(tables)
    levels = {v: subgroup_levels(covariates[v]).value_counts().sort_index().to_dict()
              for v in by}
    section = {
        "methods": chosen,
        "variables": [{"name": v, "label": VARIABLE_LABELS.get(v, v), "patients": levels[v]}
                      for v in by],
        "min_patients": MIN_PATIENTS,
        "min_events": MIN_EVENTS,
        "rows": table.to_dict("records"),
    }
    return section, table


def check_sites(tables: Cohort, site_column: str) -> list[str]:
    """The cohort's sites; raises unless there are at least two."""
    try:
        sites = site_names(tables, site_column)
    except ProgressionError as exc:
        raise ProgressionError(f"--leave-one-site-out: {exc} (or name it with --site-column)"
                               ) from None
    if len(sites) < 2:
        raise ProgressionError(
            f"--leave-one-site-out needs patients of at least 2 sites in the '{site_column}' "
            f"column of patients.csv; the cohort has {len(sites)} ({', '.join(sites) or 'none'})"
        )
    return sites


def _seen_sites(source: Any, site_column: str, tracking_uri: str | None,
                train: Cohort | None) -> set[str] | None:
    """Sites of a checkpoint's training and validation patients, read from ``train``
    (``--train-data``) or else the training cohort the checkpoint names; None when unknown."""
    data = checkpoint_data(source, tracking_uri)
    path = data.cohort_path / "patients.csv"
    if train is not None:
        patients = train.patients.astype({"patient_id": str})
    elif path.is_file():
        patients = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    else:
        return None
    if site_column not in patients.columns or "patient_id" not in patients.columns:
        return None
    split = data.meta.split_of(patients["patient_id"])  # the split may hold salted hashes
    seen_ids = set(split.get("train", [])) | set(split.get("val", []))
    if not seen_ids:
        return None
    return set(patients.loc[patients["patient_id"].isin(seen_ids), site_column].dropna()
               .astype(str))


def _model_out_of_site(source: Any, model: pd.DataFrame, site_of: pd.Series, sites: list[str],
                       site_column: str, tracking_uri: str | None, train: Cohort | None
                       ) -> tuple[pd.DataFrame | None, str]:
    """The model's forecasts of the sites it never trained on, and what the report says."""
    if not is_checkpoint(source):
        return None, ("not included: a predictions table does not record which sites its model "
                      "trained on (evaluate --checkpoint to include it)")
    seen = _seen_sites(source, site_column, tracking_uri, train)
    if seen is None:
        return None, ("not included: the checkpoint's training cohort (or its "
                      f"'{site_column}' column) cannot be read, so its sites are unknown; pass "
                      "that cohort as --train-data")
    unseen = [s for s in sites if s not in seen]
    if not unseen:
        return None, (f"not included: the checkpoint trained on patients of every site "
                      f"({', '.join(sorted(seen))}); its per-site results are in the subgroup "
                      "table. Train on all sites but one for an out-of-site estimate.")
    rows = model.assign(held_out_site=model["patient_id"].map(site_of))
    return rows[rows["held_out_site"].isin(unseen)], (
        f"not retrained: the checkpoint's training and validation patients came from "
        f"{', '.join(sorted(seen)) or 'no named site'}; its forecasts of "
        f"{', '.join(unseen)} are out-of-site results")


def site_section(methods: dict[str, pd.DataFrame], model_key: str | None, source: Any,
                 tables: Cohort, train: Cohort | None, outcomes: pd.DataFrame,
                 index_dates: pd.Series, horizons: Sequence[float], n_boot: int, seed: int,
                 site_column: str = "site", tracking_uri: str | None = None,
                 rapid_rate: float = RAPID_RATE) -> tuple[dict, pd.DataFrame]:
    """Leave-one-site-out results (``metrics.json``'s ``leave_one_site_out``) and their table."""
    sites = check_sites(tables, site_column)
    training = train if train is not None else tables
    patients = tables.patients.dropna(subset=[site_column])
    site_of = patients.set_index("patient_id")[site_column].astype(str)
    stacked: dict[str, pd.DataFrame] = {}
    retrained: dict[str, str] = {}
    skipped: dict[str, str] = {}
    fitted_on = (f"{Path(str(training.root)).name}" if training is not tables
                 else "the evaluation cohort")  # a name, not a path: the report may be logged
    for name, predictions in methods.items():
        if name == model_key:
            rows, retrained[name] = _model_out_of_site(source, predictions, site_of, sites,
                                                        site_column, tracking_uri, train)
            if rows is not None and not rows.empty:
                stacked[name] = rows
            continue
        if name == "oracle":
            stacked[name] = predictions.assign(held_out_site=predictions["patient_id"].map(site_of))
            retrained[name] = "not trained: reads the simulator's truth (a per-site ceiling)"
            continue

        def fit_predict(train_part: Cohort, test_part: Cohort, name: str = name) -> pd.DataFrame:
            index = index_dates[index_dates.index.isin(test_part.patient_ids)]
            return make_baseline(name).fit(train_part).predict(test_part, horizons, index)

        try:
            stacked[name] = leave_one_site_out(tables, fit_predict, site_column, training)
        except ProgressionError as exc:
            log.warning("leave-one-site-out: baseline %s skipped: %s", name, exc)
            skipped[name] = str(exc)
            continue
        retrained[name] = f"refitted for each left-out site on the other sites of {fitted_on}"
    groups = site_of.rename("held_out_site").rename_axis("patient_id").reset_index()
    parts = [_grouped(patient_frames(rows.drop(columns="held_out_site"),
                                     outcomes[outcomes["patient_id"].isin(rows["patient_id"])],
                                     horizons, rapid_rate=rapid_rate),
                      groups, ["held_out_site"], name, n_boot, seed)
             for name, rows in stacked.items()]
    table = _stack(parts)
    evaluated = site_of[site_of.index.isin(outcomes["patient_id"])]
    section = {
        "site_column": site_column,
        "sites": evaluated.value_counts().sort_index().to_dict(),
        "methods": list(stacked),
        "retrained": retrained,
        "skipped": skipped,
        "rows": table.to_dict("records"),
    }
    return section, table


@dataclass
class SiteInputs:
    """What the leave-one-site-out section needs beyond the subgroup section."""

    source: Any  # the model: a checkpoint path, a predictions table, or None
    tables: Cohort  # the evaluated cohort
    train: Cohort | None  # the cohort the baselines are fitted on (None: the evaluated one)
    index_dates: pd.Series
    site_column: str = "site"
    tracking_uri: str | None = None


@dataclass
class GroupPlan:
    """The evaluated patients' subgroups, checked before any forecast is made."""

    covariates: pd.DataFrame  # index_covariates()
    index_scores: pd.DataFrame  # patient_id, svdh_index_obs (the read score at the index)
    by: list[str]  # subgroup variables
    sites: SiteInputs | None  # None: no leave-one-site-out section
    rapid_rate: float = RAPID_RATE  # units/year in the cohort's scoring system


def index_scores(cohort: Cohort, outcomes: pd.DataFrame) -> pd.DataFrame:
    """The given (read) SvdH total at each patient's index visit, for the scoring metrics."""
    index = outcomes[["patient_id", "index_date"]].drop_duplicates("patient_id")
    reads = cohort.visits[["patient_id", "visit_date", "svdh_total"]].rename(
        columns={"visit_date": "index_date", "svdh_total": "svdh_index_obs"}
    )
    return index.merge(reads, on=["patient_id", "index_date"], how="left")[
        ["patient_id", "svdh_index_obs"]
    ]


def plan_groups(tables: Cohort, outcomes: pd.DataFrame, extra: Sequence[str] = (),
                sites: SiteInputs | None | bool = None, rapid_rate: float = RAPID_RATE
                ) -> GroupPlan:
    """Subgroups of the evaluation report: the defaults the cohort has plus ``extra``
    (``--subgroups``), and with ``sites`` the leave-one-site-out section (module docstring
    says what is retrained); raises a clear error for an unknown column or fewer than 2 sites."""
    covariates = index_covariates(tables, outcomes)
    by = subgroup_columns(covariates, extra)
    if isinstance(sites, SiteInputs):
        check_sites(tables, sites.site_column)
    return GroupPlan(covariates, index_scores(tables, outcomes), by,
                     sites if isinstance(sites, SiteInputs) else None, rapid_rate)


def group_sections(plan: GroupPlan, methods: dict[str, pd.DataFrame], model_key: str | None,
                   outcomes: pd.DataFrame, horizons: Sequence[float], n_boot: int, seed: int
                   ) -> dict[str, tuple[dict, pd.DataFrame]]:
    """``{"subgroups": (section, table)}``, plus ``"leave_one_site_out"`` when planned."""
    sections = {"subgroups": subgroup_section(methods, model_key, outcomes, plan.covariates,
                                              plan.index_scores, horizons, plan.by, n_boot,
                                              seed, plan.rapid_rate)}
    if plan.sites is not None:
        sites = plan.sites
        sections["leave_one_site_out"] = site_section(
            methods, model_key, sites.source, sites.tables, sites.train, outcomes,
            sites.index_dates, horizons, n_boot, seed, sites.site_column, sites.tracking_uri,
            plan.rapid_rate)
    return sections


def write_section_tables(out_dir: Path, sections: dict[str, tuple[dict, pd.DataFrame]]
                         ) -> dict[str, str]:
    """``<section>.csv`` of every section in ``out_dir``; returns the files written."""
    for name, (_, rows) in sections.items():
        atomic_write_csv(out_dir / f"{name}.csv", rows)
    return {name: f"{name}.csv" for name in sections}


# --------------------------------------------------------------------------- readable tables
def _cell(row: pd.Series | None) -> dict[str, Any]:
    if row is None:
        return {"value": None, "ci_lo": None, "ci_hi": None, "note": "not computed"}
    return {"value": row["value"], "ci_lo": row["ci_lo"], "ci_hi": row["ci_hi"],
            "note": row["note"]}


def html_tables(table: pd.DataFrame, horizons: Sequence[float],
                group_by: str = "method") -> list[dict[str, Any]]:
    """The readable tables of a section: one per method (or site) and horizon, plus one of
    the horizon-free metrics; rows are subgroup levels with their counts."""
    out = []
    if table.empty:
        return out
    for key in dict.fromkeys(table[group_by]):
        part = table[table[group_by] == key]
        for h in [*horizons, None]:
            rows = part[part["horizon_years"].isna()] if h is None else part[
                part["horizon_years"] == h]
            columns = HORIZON_COLUMNS if h is not None else OVERALL_COLUMNS
            columns = tuple(c for c in columns if c in set(rows["metric"]))
            if rows.empty or not columns:
                continue
            body = []
            for (variable, level), level_rows in rows.groupby(["variable", "level"], sort=False):
                by_metric = {r["metric"]: r for _, r in level_rows.iterrows()}
                first = level_rows.iloc[0]
                count_metric = columns[0]
                body.append({
                    "variable": VARIABLE_LABELS.get(variable, variable),
                    "level": level,
                    "n": int(by_metric[count_metric]["n"]) if count_metric in by_metric else 0,
                    "count": int(first["n_rapid"] if h is not None else first["n_events"]),
                    "cells": [_cell(by_metric.get(c)) for c in columns],
                })
            out.append({
                "key": key,
                "horizon": horizon_label(h) if h is not None else None,
                "columns": [COLUMN_LABELS.get(c, c) for c in columns],
                "count": "rapid" if h is not None else "events",
                "rows": body,
            })
    return out
