"""Progression thresholds in SvdH units.

Rapid radiographic progression (RRP) is a yearly SvdH change of at least
:data:`RAPID_RATE` = 5 units/year (the usual definition in RA trials, e.g. Vastesaeger
et al., Rheumatology 2009;48:1114). A change is called detectable when it exceeds the
smallest detectable change (SDC); the default :data:`DEFAULT_SDC` = 5.0 SvdH units is
the smallest detectable difference found by Bruynesteijn et al. (Arthritis Rheum
2002;46:913), which expert panels also judged the minimal clinically important
difference. The SDC depends on readers and design, so pass your own where known.

Larsen (1995 revision, 0-160): no rapid-progression cut-off is as established for Larsen
units as 5 SvdH units/year is for SvdH. :data:`LARSEN_RAPID_RATE` carries the SvdH cut-off
over as the same fraction of the scale's maximum per year: 5/448 = 1.1 %/year of 160 =
1.79 Larsen units/year (and :data:`LARSEN_SDC` likewise, 1.79 Larsen units). The simulator's
Larsen convention (:mod:`progression.simulate.larsen`) scales totals by the same ratio, so a
simulated patient is rapid in Larsen units exactly when it is rapid in SvdH units. With real
Larsen data, judge this cut-off against your readers and report it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from progression.scoring.larsen import LARSEN_MAX_TOTAL
from progression.scoring.svdh import SVDH_MAX_TOTAL

RAPID_RATE: float = 5.0  # SvdH units per year
DEFAULT_SDC: float = 5.0  # SvdH units
LARSEN_PER_SVDH: float = LARSEN_MAX_TOTAL / SVDH_MAX_TOTAL  # 160 / 448: ratio of the maxima (Larsen 1995 / SvdH totals)
LARSEN_RAPID_RATE: float = RAPID_RATE * LARSEN_PER_SVDH  # 1.79 Larsen units per year
LARSEN_SDC: float = DEFAULT_SDC * LARSEN_PER_SVDH  # 1.79 Larsen units


def is_rapid(delta: npt.ArrayLike, years: npt.ArrayLike,
             rate: float = RAPID_RATE) -> np.ndarray | bool:
    """True where a change of ``delta`` units over ``years`` years is >= ``rate`` units/year
    (default 5 SvdH units/year; a Larsen cohort passes its system's ``rapid_rate``).

    Works element-wise on arrays; ``years`` must be > 0. NaN deltas give False. A change
    within 1e-9 units of the threshold counts as reaching it, so a threshold carried to
    another scale by a ratio (Larsen) is met exactly where it was met in SvdH units.
    """
    d = np.asarray(delta, dtype=float)
    y = np.asarray(years, dtype=float)
    if np.any(y <= 0):
        raise ValueError("is_rapid: years must be > 0 (the interval the change covers)")
    result = d >= rate * y - 1e-9
    return bool(result) if result.ndim == 0 else result


def exceeds_sdc(delta: npt.ArrayLike, sdc: float = DEFAULT_SDC) -> np.ndarray | bool:
    """True where a change of ``delta`` SvdH units is larger than the SDC (``sdc`` units)."""
    if sdc < 0:
        raise ValueError("exceeds_sdc: sdc must be >= 0 SvdH units")
    result = np.asarray(delta, dtype=float) > sdc
    return bool(result) if result.ndim == 0 else result
