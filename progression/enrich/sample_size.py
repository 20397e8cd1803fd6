"""Sample size and power of a two-arm parallel trial, for a mean change or a proportion.

Two endpoints are sized, both for a two-sided test at level ``alpha``:

* **Mean SvdH change** (SvdH units over the trial horizon), compared by a two-sample
  t-test (Welch when the arms' SDs differ) or its normal (z) approximation. With
  ``k = n_treated / n_control`` (the allocation ratio) the z-approximation is
  (Chow, Shao & Wang 2008, section 3.2.1, generalised to unequal SDs)::

      n_control = (z_{1-alpha/2} + z_{1-beta})^2 * (sd_control^2 + sd_treated^2 / k) / delta^2
      n_treated = k * n_control

  ``method="t"`` raises ``n_control`` from the z answer until the power of the t-test,
  computed exactly from the noncentral t distribution (Welch-Satterthwaite degrees of
  freedom when the SDs differ, ``n_control + n_treated - 2`` when they are equal),
  reaches the target (Chow, Shao & Wang 2008, section 3.2.1, remark on small samples).
  Textbook check: sd 1, delta 0.5, alpha 0.05, power 0.8 -> 63 per arm (z), 64 (t).

* **Proportion progressing** (e.g. rapid radiographic progressors), compared by the
  two-proportion z-test with continuity correction (equivalently the chi-square test
  with Yates' correction). Sizes use Fleiss, Tytun & Ury (1980), the formula behind the
  tables of Fleiss, Levin & Paik (2003, section 4.2)::

      pbar = (p_control + k * p_treated) / (1 + k),  Delta = |p_control - p_treated|
      n' = [z_{1-alpha/2} sqrt((k+1) pbar qbar) + z_{1-beta} sqrt(k p_c q_c + p_t q_t)]^2 / (k Delta^2)
      n_control = n'/4 * (1 + sqrt(1 + 2 (k+1) / (n' k Delta)))^2,   n_treated = k * n_control

  Textbook check: p 0.25 vs 0.40, alpha 0.05, power 0.9 -> 216 per arm (the Stata
  ``sampsi 0.25 0.4`` example; 203 without the correction).

Every size is rounded up per arm. :func:`inflate_for_dropout` then divides by the
fraction expected to complete (``ceil(n / (1 - dropout))``), so that on average ``n``
patients per arm still reach the endpoint.

References
----------
Chow SC, Shao J, Wang H. Sample Size Calculations in Clinical Research, 2nd ed.
Chapman & Hall/CRC, 2008 (sections 3.2 and 4.2).
Fleiss JL, Tytun A, Ury HK. A simple approximation for calculating sample sizes for
comparing independent proportions. Biometrics 1980;36:343-346.
Fleiss JL, Levin B, Paik MC. Statistical Methods for Rates and Proportions, 3rd ed.
Wiley, 2003.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from progression.errors import ProgressionError

METHODS = ("t", "z")


@dataclass(frozen=True)
class ArmSizes:
    """Patients per arm (control and treated) of a two-arm trial."""

    control: int
    treated: int

    @property
    def total(self) -> int:
        return self.control + self.treated


def _check_design(alpha: float, power: float, allocation: float) -> None:
    if not 0 < alpha < 1:
        raise ProgressionError(f"alpha must be between 0 and 1 (got {alpha}); e.g. --alpha 0.05")
    if not 0 < power < 1:
        raise ProgressionError(f"power must be between 0 and 1 (got {power}); e.g. --power 0.8")
    if not allocation > 0:
        raise ProgressionError(
            f"allocation ratio treated:control must be > 0 (got {allocation}); e.g. --allocation 1"
        )


def _ceil(x: float) -> int:
    # Guard against 63.000000000001 becoming 64 through floating-point noise.
    return math.ceil(x - 1e-9)


def power_two_means(
    n_control: int,
    n_treated: int,
    delta: npt.ArrayLike,
    sd_control: npt.ArrayLike,
    sd_treated: npt.ArrayLike | None = None,
    alpha: float = 0.05,
    method: str = "t",
) -> float | np.ndarray:
    """Power of the two-sided two-sample test of means with these arm sizes.

    ``delta``: true difference in mean change (SvdH units); ``sd_*``: SD of the change
    in each arm (SvdH units; ``sd_treated`` defaults to ``sd_control``). Arrays give one
    power per element (e.g. per bootstrap resample).
    """
    sd_c = np.asarray(sd_control, dtype=float)
    sd_t = sd_c if sd_treated is None else np.asarray(sd_treated, dtype=float)
    var_c, var_t = sd_c**2 / n_control, sd_t**2 / n_treated
    ncp = np.abs(np.asarray(delta, dtype=float)) / np.sqrt(var_c + var_t)
    if method == "z":
        z = stats.norm.ppf(1 - alpha / 2)
        power = stats.norm.sf(z - ncp) + stats.norm.cdf(-z - ncp)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            welch = (var_c + var_t) ** 2 / (var_c**2 / (n_control - 1) + var_t**2 / (n_treated - 1))
        df = np.where(np.isclose(sd_c, sd_t), n_control + n_treated - 2, welch)
        t = stats.t.ppf(1 - alpha / 2, df)
        power = stats.nct.sf(t, df, ncp) + stats.nct.cdf(-t, df, ncp)
        # scipy's noncentral t returns NaN far in the tail (power ~ 1): use the normal there
        power = np.where(np.isnan(power), stats.norm.sf(t - ncp), power)
    return float(power) if np.ndim(power) == 0 else power


def n_two_means(
    delta: float,
    sd_control: float,
    sd_treated: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    allocation: float = 1.0,
    method: str = "t",
) -> ArmSizes:
    """Completers per arm to detect a difference ``delta`` in mean change (SvdH units).

    ``allocation`` = n_treated / n_control. ``method`` "z" is the normal approximation,
    "t" the exact t-test power (Welch when the SDs differ). See the module docstring.
    """
    _check_design(alpha, power, allocation)
    if method not in METHODS:
        raise ProgressionError(f"unknown sample-size method '{method}'; use one of {METHODS}")
    sd_t = sd_control if sd_treated is None else sd_treated
    if not delta > 0:
        raise ProgressionError(
            f"the difference to detect must be > 0 SvdH units (got {delta:.4g}): the selected "
            "patients are not predicted to progress; select more progressive patients or "
            "check --horizon"
        )
    if not (sd_control > 0 and sd_t > 0):
        raise ProgressionError(
            f"the SD of the change must be > 0 (got control {sd_control:.4g}, treated {sd_t:.4g})"
        )
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n_c = z**2 * (sd_control**2 + sd_t**2 / allocation) / delta**2
    n_control = max(2, _ceil(n_c))
    if method == "z":
        return ArmSizes(n_control, max(2, _ceil(allocation * n_c)))
    while True:
        n_treated = max(2, _ceil(allocation * n_control))
        if power_two_means(n_control, n_treated, delta, sd_control, sd_t, alpha, "t") >= power:
            return ArmSizes(n_control, n_treated)
        n_control += 1


def _check_proportions(p_control: float, p_treated: float) -> None:
    for name, p in (("control", p_control), ("treated", p_treated)):
        if not 0 <= p <= 1:
            raise ProgressionError(f"the {name} proportion must be in [0, 1] (got {p})")
    if p_control == p_treated:
        raise ProgressionError(
            f"the two proportions are equal ({p_control:.3g}): no trial size can detect a "
            "difference; check the effect and the predicted rapid-progressor fractions"
        )


def n_two_proportions(
    p_control: float,
    p_treated: float,
    alpha: float = 0.05,
    power: float = 0.8,
    allocation: float = 1.0,
    continuity: bool = True,
) -> ArmSizes:
    """Completers per arm to tell ``p_control`` from ``p_treated`` (Fleiss, Tytun & Ury 1980).

    ``continuity=False`` gives the uncorrected normal-approximation size.
    """
    _check_design(alpha, power, allocation)
    _check_proportions(p_control, p_treated)
    k = allocation
    diff = abs(p_control - p_treated)
    pbar = (p_control + k * p_treated) / (1 + k)
    z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    spread = math.sqrt(k * p_control * (1 - p_control) + p_treated * (1 - p_treated))
    n_c = (z_a * math.sqrt((k + 1) * pbar * (1 - pbar)) + z_b * spread) ** 2 / (k * diff**2)
    if continuity:
        n_c = n_c / 4 * (1 + math.sqrt(1 + 2 * (k + 1) / (n_c * k * diff))) ** 2
    return ArmSizes(max(2, _ceil(n_c)), max(2, _ceil(k * n_c)))


def power_two_proportions(
    n_control: int,
    p_control: npt.ArrayLike,
    p_treated: npt.ArrayLike,
    alpha: float = 0.05,
    allocation: float = 1.0,
    continuity: bool = True,
) -> float | np.ndarray:
    """Approximate power of the corrected two-proportion test (inverse of the Fleiss size).

    Arrays of proportions give one power per element; equal proportions give power 0.
    """
    p_c, p_t = np.asarray(p_control, dtype=float), np.asarray(p_treated, dtype=float)
    k = allocation
    diff = np.abs(p_c - p_t)
    n = np.full(diff.shape, float(n_control))
    with np.errstate(invalid="ignore", divide="ignore"):
        if continuity:
            correction = (k + 1) / (2 * k * diff)
            n = np.where(n > correction, (n - correction) ** 2 / n, 0.0)
        pbar = (p_c + k * p_t) / (1 + k)
        z_a = stats.norm.ppf(1 - alpha / 2)
        spread = np.sqrt(k * p_c * (1 - p_c) + p_t * (1 - p_t))
        z = (diff * np.sqrt(k * n) - z_a * np.sqrt((k + 1) * pbar * (1 - pbar))) / spread
    power = np.where((diff > 0) & (n > 0), stats.norm.cdf(z), 0.0)
    return float(power) if np.ndim(power) == 0 else power


def inflate_for_dropout(sizes: ArmSizes, dropout: float) -> ArmSizes:
    """Patients to enrol per arm so that ``sizes`` complete when a fraction ``dropout`` leaves."""
    if not 0 <= dropout < 1:
        raise ProgressionError(
            f"dropout must be in [0, 1) (got {dropout}); e.g. --dropout 0.1 for 10% lost"
        )
    return ArmSizes(_ceil(sizes.control / (1 - dropout)), _ceil(sizes.treated / (1 - dropout)))
