"""The planned two-arm tests, vectorised over many simulated trials at once.

Used both to size a trial by simulation from the forecasts (:mod:`~progression.enrich.plan`)
and to check a size on realised outcomes (:mod:`~progression.enrich.trial`). A trial
"rejects" when the two-sided test at ``alpha`` is significant in the treatment's favour
(control worse than treated).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats

_DF_GRID = np.geomspace(1.0, 1e7, 4000)


@lru_cache(maxsize=8)
def _t_crit_table(alpha: float) -> np.ndarray:
    return stats.t.isf(alpha / 2, _DF_GRID)


def t_critical(alpha: float, df: np.ndarray) -> np.ndarray:
    """Two-sided critical values of Student's t for (non-integer) ``df``.

    Interpolated in log(df) on a fine grid (error < 1e-5): ``scipy.stats.t.isf`` on
    millions of simulated trials would dominate the run time.
    """
    df = np.clip(np.asarray(df, dtype=float), _DF_GRID[0], _DF_GRID[-1])
    return np.interp(np.log(df), np.log(_DF_GRID), _t_crit_table(float(alpha)))


def welch_rejects(n_c: np.ndarray, mean_c: np.ndarray, var_c: np.ndarray, n_t: np.ndarray,
                  mean_t: np.ndarray, var_t: np.ndarray, alpha: float,
                  method: str = "t") -> np.ndarray:
    """Welch's t-test (``method="t"``) or the z-test: does the treated mean fall below control?

    Arguments are per-trial arrays: completers, mean and variance (ddof=1) of the
    SvdH change in each arm. Trials with fewer than 2 completers in an arm never reject.
    """
    ok = (n_c >= 2) & (n_t >= 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = var_c / n_c, var_t / n_t
        t = (mean_c - mean_t) / np.sqrt(a + b)
        if method == "z":
            crit = stats.norm.isf(alpha / 2)
        else:
            df = (a + b) ** 2 / (a**2 / (n_c - 1) + b**2 / (n_t - 1))
            crit = t_critical(alpha, np.nan_to_num(df, nan=1.0))
        return ok & (t > crit)


def proportion_rejects(x_c: np.ndarray, n_c: np.ndarray, x_t: np.ndarray, n_t: np.ndarray,
                       alpha: float) -> np.ndarray:
    """Two-proportion z-test with continuity correction (= chi-square with Yates' correction).

    ``x_*``: rapid progressors, ``n_*``: completers per arm and trial. Rejects when the
    control proportion is significantly higher than the treated one.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        p_c, p_t = x_c / n_c, x_t / n_t
        pbar = (x_c + x_t) / (n_c + n_t)
        inv = 1 / n_c + 1 / n_t
        z = (p_c - p_t - inv / 2) / np.sqrt(pbar * (1 - pbar) * inv)
        return z > stats.norm.isf(alpha / 2)
