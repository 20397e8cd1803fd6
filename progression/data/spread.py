"""The visit's scores spread over its films, for cohorts scored per visit only.

A cohort with visit totals (or erosion/JSN subtotals) but no joint_scores.csv has no target
for a single film. The image stage then learns from the sum of a visit's per-region readings
against the visit's scores (the ``current`` loss of the image stage); this module gives the
per-region share of a visit's scores, in proportion to each region's maximum score, which
starts the damage heads at a sensible level instead of at 0 units (a head that starts at 0
reads many films as negative log-damage, clamped to 0, and gets no gradient from them).
"""

from __future__ import annotations

import numpy as np

from progression.scoring import (
    REGION_MAX_EROSION,
    REGION_MAX_JSN,
    REGIONS,
    SVDH_MAX_EROSION,
    SVDH_MAX_JSN,
)

# Share of the visit's erosion / JSN score that each region can hold: [R, 2].
REGION_SHARE = np.array([[REGION_MAX_EROSION[r] / SVDH_MAX_EROSION, REGION_MAX_JSN[r] / SVDH_MAX_JSN]
                         for r in REGIONS])
EROSION_SHARE = SVDH_MAX_EROSION / (SVDH_MAX_EROSION + SVDH_MAX_JSN)


def spread_visit_scores(obs: np.ndarray) -> np.ndarray:
    """Per-region erosion/JSN ``[V, R, 2]`` (SvdH units) from visit scores ``obs`` ``[V, 3]``
    (total, erosion, JSN; NaN = not scored): each subtotal split over the regions by their
    maximum scores; a visit with a total only is split into erosion and JSN the same way."""
    obs = np.asarray(obs, dtype=np.float64)
    erosion = np.where(np.isnan(obs[:, 1]), obs[:, 0] * EROSION_SHARE, obs[:, 1])
    jsn = np.where(np.isnan(obs[:, 2]), obs[:, 0] * (1 - EROSION_SHARE), obs[:, 2])
    parts = np.stack([erosion, jsn], axis=-1)  # [V, 2]
    return (parts[:, None, :] * REGION_SHARE[None]).astype(np.float32)
