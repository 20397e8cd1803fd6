"""The oracle: forecasts from the simulator's full latent state, read from ``truth/``.

No model can beat it on average (it knows each patient's rate, inflammation and
treatment at the index), so it bounds what the image + biomarker models can reach.

This is the one reader of the oracle: :class:`Oracle` (``enrich``, notebooks) and the
``oracle`` baseline of ``evaluate`` both turn ``truth.csv`` into a predictions table with
:func:`oracle_predictions`, so its ``risk_score`` is the same wherever it is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from progression.columns import PREDICTION_COLUMNS
from progression.errors import CohortError


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = folder / f"{name}.csv"
    if not path.is_file():
        raise CohortError(
            f"'{path}' not found: the oracle needs a cohort written by "
            "`progression simulate` (its truth/ folder)"
        )
    return pd.read_csv(path, dtype={"patient_id": str})


def read_truth(cohort_dir: str | Path) -> pd.DataFrame:
    """``<cohort_dir>/truth/truth.csv``; CohortError if the cohort was not simulated."""
    return _read(Path(cohort_dir) / "truth", "truth")


def oracle_horizons(truth: pd.DataFrame) -> tuple[float, ...]:
    """The horizons (years) the truth table has oracle forecasts for."""
    cols = [c for c in truth.columns if c.startswith("oracle_delta_") and c.endswith("y")]
    return tuple(float(c.removeprefix("oracle_delta_")[:-1]) for c in cols if "_q" not in c)


def oracle_predictions(
    truth: pd.DataFrame, horizons: Sequence[float] | None = None
) -> pd.DataFrame:
    """The oracle as a predictions table (one row per patient x horizon; None = all it has).

    ``delta_svdh_lo/hi`` are the 5% and 95% quantiles of the change (a 90% interval);
    ``risk_score`` is the expected change per year at the row's horizon,
    ``delta_svdh_pred / horizon_years`` (SvdH units/yr), the rule of the model's predictions
    table (docs/architecture.md); ``note`` is empty (nothing degrades the oracle).
    """
    rows = []
    for h in oracle_horizons(truth) if horizons is None else horizons:
        tag = f"{float(h):g}y"
        delta = truth[f"oracle_delta_{tag}"].astype(float)
        rows.append(
            pd.DataFrame(
                {
                    "patient_id": truth["patient_id"],
                    "index_date": pd.to_datetime(truth["index_date"]).dt.strftime("%Y-%m-%d"),
                    "horizon_years": float(h),
                    "svdh_index_pred": truth["svdh_true_index"].astype(float),
                    "delta_svdh_pred": delta,
                    "delta_svdh_lo": truth[f"oracle_delta_q05_{tag}"].astype(float),
                    "delta_svdh_hi": truth[f"oracle_delta_q95_{tag}"].astype(float),
                    "p_rapid": truth[f"oracle_p_rapid_{tag}"].astype(float),
                    "risk_score": delta / float(h),
                    "note": "",
                }
            )
        )
    out = pd.concat(rows, ignore_index=True)
    return out.sort_values(["patient_id", "horizon_years"], kind="stable").reset_index(
        drop=True
    )[list(PREDICTION_COLUMNS)]


@dataclass
class Oracle:
    """Ground truth of a simulated cohort (``truth.csv`` and ``followup.csv``)."""

    truth: pd.DataFrame
    followup: pd.DataFrame

    @classmethod
    def load(cls, cohort_dir: str | Path) -> Oracle:
        """Read ``<cohort_dir>/truth``; CohortError if the cohort was not simulated."""
        folder = Path(cohort_dir) / "truth"
        return cls(_read(folder, "truth"), _read(folder, "followup"))

    @property
    def horizons(self) -> tuple[float, ...]:
        return oracle_horizons(self.truth)

    def predictions(self, horizons: Sequence[float] | None = None) -> pd.DataFrame:
        """The oracle as a predictions table: :func:`oracle_predictions` of this truth."""
        return oracle_predictions(self.truth, horizons)
