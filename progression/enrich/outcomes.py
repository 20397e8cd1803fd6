"""Realised outcomes to validate an enrichment against, from the evaluation's outcomes table.

``--outcomes`` may be

* a simulated cohort directory (its ``truth/``) or its ``truth/truth.csv``: the realised
  change is the simulator's noise-free ``delta_true_<h>y``, and time to rapid progression
  comes from ``truth/followup.csv`` (every 0.5 y up to 3 y after the index);
* a real cohort directory with scored visits after the forecast origin (landmark split);
* an outcomes table CSV (docs/evaluation.md: ``patient_id, index_date, horizon_years,
  delta_svdh_obs, time_to_event_years, event``).

The definitions are those of :mod:`progression.data.outcomes`, so ``progression
evaluate`` and ``progression enrich`` score the same outcomes. An event is rapid progression: the
first follow-up visit at which the change since the index reaches 5 SvdH units per
elapsed year (``progression.scoring.is_rapid``); patients without one are censored at
their last follow-up visit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from progression.errors import ProgressionError


@dataclass(frozen=True)
class Outcomes:
    """Realised change at one horizon and time to rapid progression, per patient.

    ``deltas``: patient_id, delta (SvdH units over the horizon). ``times``: patient_id,
    years (to the event or censoring), event (1 = rapid progression seen); None when the
    source has no follow-up.
    """

    source: str
    outcome: str
    deltas: pd.DataFrame
    times: pd.DataFrame | None


def _from_truth(truth_dir: Path, horizon: float) -> pd.DataFrame:
    """The outcomes table of a simulated cohort, read from ``truth/`` alone.

    Reading only ``truth/`` (not the cohort tables) keeps this fast and works for cohorts
    simulated without images. Same definitions as
    :func:`progression.data.outcomes.outcomes_from_truth` with noise-free follow-up.
    """
    from progression.data.outcomes import OutcomeRule, first_event

    truth = pd.read_csv(truth_dir / "truth.csv", dtype={"patient_id": str})
    column = f"delta_true_{horizon:g}y"
    if column not in truth.columns:
        have = sorted(c.removeprefix("delta_true_") for c in truth.columns
                      if c.startswith("delta_true_"))
        raise ProgressionError(
            f"{truth_dir / 'truth.csv'} has no column {column}; the truth has horizons "
            f"{', '.join(have)}: pass one of them with --horizon"
        )
    table = truth[["patient_id", "index_date"]].assign(
        horizon_years=horizon, delta_svdh_obs=truth[column].astype(float),
        time_to_event_years=np.nan, event=np.nan)
    followup_path = truth_dir / "followup.csv"
    if followup_path.is_file():
        followup = pd.read_csv(followup_path, dtype={"patient_id": str}).merge(
            truth[["patient_id", "svdh_true_index"]], on="patient_id")
        change = followup["svdh_total_true"] - followup["svdh_true_index"]
        rule = OutcomeRule(horizons=(horizon,))
        events = {pid: first_event(part["years_from_index"].to_numpy(float),
                                   change[part.index].to_numpy(float), rule)
                  for pid, part in followup.groupby("patient_id")}
        table["time_to_event_years"] = table["patient_id"].map(lambda p: events.get(p, (np.nan,))[0])
        table["event"] = table["patient_id"].map(lambda p: events.get(p, (np.nan, np.nan))[1])
    return table


def _table(path: Path, horizon: float) -> tuple[pd.DataFrame, str]:
    if path.is_file() and path.name == "truth.csv":
        return _from_truth(path.parent, horizon), "simulated truth (noise-free change)"
    if (path / "truth" / "truth.csv").is_file():
        return _from_truth(path / "truth", horizon), "simulated truth (noise-free change)"
    if path.is_dir():
        from progression.data.outcomes import OutcomeRule, landmark_outcomes
        from progression.evaluate.inputs import load_cohort

        table = landmark_outcomes(load_cohort(path), OutcomeRule(horizons=(horizon,)))
        return table, "observed change (landmark split of a real cohort)"
    if path.is_file():
        from progression.evaluate.inputs import read_outcomes

        return read_outcomes(path), "outcomes table"
    raise ProgressionError(
        f"outcomes '{path}' not found; give a simulated cohort directory, its truth/truth.csv, "
        "a real cohort directory or an outcomes table CSV"
    )


def load_outcomes(path: str | Path, horizon: float) -> Outcomes:
    """Realised outcomes at ``horizon`` years from ``path`` (see the module docstring)."""
    path = Path(path)
    table, kind = _table(path, horizon)
    rows = table[np.isclose(table["horizon_years"], horizon)]
    deltas = (rows[["patient_id", "delta_svdh_obs"]].dropna()
              .rename(columns={"delta_svdh_obs": "delta"}).reset_index(drop=True))
    if deltas.empty:
        have = ", ".join(f"{h:g}" for h in sorted(table["horizon_years"].unique()))
        raise ProgressionError(
            f"outcomes '{path}': no realised change at horizon {horizon:g} years "
            f"(horizons with outcomes: {have or 'none'})"
        )
    times = (rows[["patient_id", "time_to_event_years", "event"]].dropna()
             .rename(columns={"time_to_event_years": "years"})
             .drop_duplicates("patient_id").reset_index(drop=True))
    times["event"] = times["event"].astype(int)
    return Outcomes(str(path), kind, deltas, times if not times.empty else None)
