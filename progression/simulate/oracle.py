"""The oracle: forecasts from the simulator's full latent state, read from ``truth/``.

No model can beat it on average (it knows each patient's rate, inflammation and
treatment at the index), so it bounds what the image + biomarker models can reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from progression.columns import PREDICTION_COLUMNS
from progression.errors import CohortError


@dataclass
class Oracle:
    """Ground truth of a simulated cohort (``truth.csv`` and ``followup.csv``)."""

    truth: pd.DataFrame
    followup: pd.DataFrame

    @classmethod
    def load(cls, cohort_dir: str | Path) -> Oracle:
        """Read ``<cohort_dir>/truth``; CohortError if the cohort was not simulated."""
        folder = Path(cohort_dir) / "truth"
        frames = {}
        for name in ("truth", "followup"):
            path = folder / f"{name}.csv"
            if not path.is_file():
                raise CohortError(
                    f"'{path}' not found: the oracle needs a cohort written by "
                    "`progression simulate` (its truth/ folder)"
                )
            frames[name] = pd.read_csv(path, dtype={"patient_id": str})
        return cls(frames["truth"], frames["followup"])

    @property
    def horizons(self) -> tuple[float, ...]:
        cols = [c for c in self.truth.columns if c.startswith("oracle_delta_") and c.endswith("y")]
        return tuple(float(c.removeprefix("oracle_delta_")[:-1]) for c in cols if "_q" not in c)

    def predictions(self) -> pd.DataFrame:
        """The oracle as a predictions table (one row per patient x horizon, 1 and 2 years).

        ``delta_svdh_lo/hi`` are the 5% and 95% quantiles of the change (a 90% interval);
        ``risk_score`` is the expected change per year (SvdH units/yr).
        """
        rows = []
        for h in self.horizons:
            tag = f"{h:g}y"
            rows.append(
                pd.DataFrame(
                    {
                        "patient_id": self.truth["patient_id"],
                        "index_date": self.truth["index_date"],
                        "horizon_years": h,
                        "svdh_index_pred": self.truth["svdh_true_index"].astype(float),
                        "delta_svdh_pred": self.truth[f"oracle_delta_{tag}"],
                        "delta_svdh_lo": self.truth[f"oracle_delta_q05_{tag}"].astype(float),
                        "delta_svdh_hi": self.truth[f"oracle_delta_q95_{tag}"].astype(float),
                        "p_rapid": self.truth[f"oracle_p_rapid_{tag}"],
                        "risk_score": self.truth[f"oracle_delta_{tag}"] / h,
                        "note": "oracle: latent state known",
                    }
                )
            )
        out = pd.concat(rows, ignore_index=True)
        return out.sort_values(["patient_id", "horizon_years"], kind="stable").reset_index(
            drop=True
        )[list(PREDICTION_COLUMNS)]
