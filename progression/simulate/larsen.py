"""A Larsen-scored simulated cohort: the SvdH cohort the simulator writes, in Larsen units.

Simulation convention (not a clinical conversion): a Larsen total is the SvdH total times
:data:`~progression.scoring.LARSEN_PER_SVDH` = 160/448, the ratio of the two scales' maxima
(Larsen 1995 revision, 0-160; SvdH, 0-448), so full damage maps to full damage. Every total
in the cohort and its truth is converted the same way: the reader-scored visit totals
(``visits.csv`` ``larsen_total``, rounded to 0.01 as the readers' noise already sits in the
SvdH grades they come from), the true totals, the true and the oracle's changes and
quantiles. Because the conversion is linear and the Larsen rapid threshold is the SvdH one
times the same ratio (:data:`~progression.scoring.thresholds.LARSEN_RAPID_RATE`), the
oracle stays the oracle in Larsen units: its expected change, quantiles and ``p_rapid``
are exact. Real Larsen grades are not a linear function of SvdH grades (one Larsen grade
per joint summarises erosion and narrowing together); the convention is chosen so the
oracle can be computed in closed form, not to model how a Larsen reader grades.

What changes: ``visits.csv`` has ``larsen_total`` instead of the three SvdH columns;
``joint_scores.csv`` is not written (the SvdH joint grades have no Larsen counterpart under
this convention); ``cohort.yaml`` declares ``scoring: larsen``. The truth keeps its column
names (``svdh_true_index``, ``delta_true_1y``, ``svdh_total_true`` ...), now in Larsen
units, except ``truth/joint_truth.csv`` and ``svdh_erosion_first_visit``, which stay
per-joint SvdH grades (the films are drawn from them).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from progression.cohort.format import JOINT_SCORES, OPTIONS_FILE, VISITS
from progression.columns import SCORE_COLUMNS
from progression.io import atomic_write_csv, atomic_write_text
from progression.scoring import LARSEN, LARSEN_PER_SVDH

# Totals and changes of the truth tables, in SvdH units as simulated.
_TRUTH_TOTALS = {
    "truth.csv": ("svdh_true_index", "rate_true", "delta_true_", "oracle_delta_"),
    "truth_visits.csv": ("svdh_total_true", "rate_true"),
    "followup.csv": ("svdh_total", "svdh_total_true"),
}


def to_larsen(svdh: pd.Series) -> pd.Series:
    """SvdH units -> Larsen units under the simulation convention (module docstring); the
    truth keeps full precision so a rapid change stays rapid at the carried-over threshold."""
    return svdh * LARSEN_PER_SVDH


def convert_to_larsen(cohort_dir: str | Path) -> None:
    """Rewrite the simulated SvdH cohort at ``cohort_dir`` as a Larsen-scored one (atomically,
    file by file; called by the simulator before it marks the cohort complete)."""
    root = Path(cohort_dir)
    visits = pd.read_csv(root / VISITS, dtype=str, keep_default_na=False)  # cells as written
    larsen = to_larsen(pd.to_numeric(visits["svdh_total"], errors="coerce")).round(2)
    visits.insert(visits.columns.get_loc("svdh_total"), LARSEN.total_column,
                  larsen.map(lambda v: "" if pd.isna(v) else f"{v:g}"))
    atomic_write_csv(root / VISITS, visits.drop(columns=list(SCORE_COLUMNS)))
    (root / JOINT_SCORES).unlink(missing_ok=True)
    atomic_write_text(root / OPTIONS_FILE, f"scoring: {LARSEN.name}  # totals in Larsen units "
                      "(simulation convention: SvdH x 160/448, progression/simulate/larsen.py)\n")
    for name, prefixes in _TRUTH_TOTALS.items():
        path = root / "truth" / name
        table = pd.read_csv(path, dtype={"patient_id": str})
        for column in table.columns:
            if column.startswith(prefixes):
                table[column] = to_larsen(table[column].astype(float))
        atomic_write_csv(path, table)
