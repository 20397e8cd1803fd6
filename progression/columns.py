"""The columns of a predictions table, the file every forecaster here writes.

``progression predict``, the baselines and the simulator's oracle all write it, and
``evaluate``, ``enrich`` and ``explain`` read it (docs/architecture.md). It lives in a module
of its own so that the light producers (the simulator) need not import the evaluation stack
or torch to share it.
"""

from __future__ import annotations

PREDICTION_COLUMNS = (
    "patient_id",
    "index_date",
    "horizon_years",
    "svdh_index_pred",
    "delta_svdh_pred",
    "delta_svdh_lo",
    "delta_svdh_hi",
    "p_rapid",
    "risk_score",
    "note",
)
