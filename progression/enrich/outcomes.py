"""Realised outcomes to validate an enrichment against, from the evaluation's outcomes table.

``--outcomes`` may be

* a simulated cohort directory (its ``truth/``) or its ``truth/truth.csv``: the realised
  change is the simulator's noise-free ``delta_true_<h>y``, and time to rapid progression
  comes from ``truth/followup.csv`` (every 0.5 y up to 3 y after the index);
* a real cohort directory with scored visits after the forecast origin (landmark split);
* an outcomes table CSV (docs/evaluation.md: ``patient_id, index_date, horizon_years,
  delta_svdh_obs, time_to_event_years, event``).

All three are read by :mod:`progression.evaluate.outcomes`, so ``progression evaluate``
and ``progression enrich`` score the same outcomes. An event is rapid progression: the
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


def _table(path: Path, horizon: float) -> tuple[pd.DataFrame, str]:
    from progression.evaluate.outcomes import OutcomeRule, derive_outcomes
    from progression.evaluate.tables import load_cohort, read_outcomes

    rule = OutcomeRule(horizons=(horizon,))
    if path.is_dir():
        cohort = load_cohort(path)
        kind = ("simulated truth (noise-free change)" if cohort.truth_dir is not None
                else "observed change (landmark split of a real cohort)")
        return derive_outcomes(cohort, rule), kind
    if path.name == "truth.csv":
        if path.parent.name != "truth":
            raise ProgressionError(
                f"outcomes '{path}': a truth.csv is read from its simulated cohort "
                "(<cohort>/truth/truth.csv); pass the cohort directory instead"
            )
        return _table(path.parent.parent, horizon)
    if path.is_file():
        return read_outcomes(path), "outcomes table"
    raise ProgressionError(
        f"outcomes '{path}' not found; give a simulated cohort directory, its truth/truth.csv "
        "or an outcomes table CSV"
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
