"""Progression thresholds in SvdH units.

Rapid radiographic progression (RRP) is a yearly SvdH change of at least
:data:`RAPID_RATE` = 5 units/year (the usual definition in RA trials, e.g. Vastesaeger
et al., Rheumatology 2009;48:1114). A change is called detectable when it exceeds the
smallest detectable change (SDC); the default :data:`DEFAULT_SDC` = 5.0 SvdH units is
the smallest detectable difference found by Bruynesteijn et al. (Arthritis Rheum
2002;46:913), which expert panels also judged the minimal clinically important
difference. The SDC depends on readers and design, so pass your own where known.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RAPID_RATE: float = 5.0  # SvdH units per year
DEFAULT_SDC: float = 5.0  # SvdH units


def is_rapid(delta: npt.ArrayLike, years: npt.ArrayLike) -> np.ndarray | bool:
    """True where a change of ``delta`` SvdH units over ``years`` years is >= 5 units/year.

    Works element-wise on arrays; ``years`` must be > 0. NaN deltas give False.
    """
    d = np.asarray(delta, dtype=float)
    y = np.asarray(years, dtype=float)
    if np.any(y <= 0):
        raise ValueError("is_rapid: years must be > 0 (the interval the change covers)")
    result = d >= RAPID_RATE * y
    return bool(result) if result.ndim == 0 else result


def exceeds_sdc(delta: npt.ArrayLike, sdc: float = DEFAULT_SDC) -> np.ndarray | bool:
    """True where a change of ``delta`` SvdH units is larger than the SDC (``sdc`` units)."""
    if sdc < 0:
        raise ValueError("exceeds_sdc: sdc must be >= 0 SvdH units")
    result = np.asarray(delta, dtype=float) > sdc
    return bool(result) if result.ndim == 0 else result
