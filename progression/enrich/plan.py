"""Size an enriched two-arm trial from a selector's predictive distribution.

A *selector* is one horizon's predictions table; the enriched population is the
patients it selects. For that population the forecasts give the expected mean change
``mu`` and its SD ``sigma`` (law of total variance, see
:class:`~progression.enrich.selection.PopulationSummary`) and the expected fraction of
rapid progressors ``p`` (mean ``p_rapid``).

The treatment is assumed to slow each patient's progression by the same relative
amount ``effect`` (a proportional effect: a treated patient's change is
``(1 - effect)`` times what it would have been). Then

* mean endpoint: difference ``effect * mu``, control SD ``sigma``, treated SD
  ``(1 - effect) * sigma``; the closed-form size is
  :func:`~progression.enrich.sample_size.n_two_means`.
* proportion endpoint: control ``p``; treated: the probability that ``(1 - effect)``
  times the change still reaches the rapid threshold ``RAPID_RATE * horizon`` under each
  patient's predictive distribution (below); closed-form size
  :func:`~progression.enrich.sample_size.n_two_proportions` (Fleiss with continuity
  correction).

The closed forms assume a normal change; SvdH change is not: it counts score steps, most
patients barely progress, a few progress 30-75 units a year, and the spread grows with the
expected change (heavy-tailed and heteroscedastic). By default (``sizing="simulation"``)
the size used for *both* endpoints is therefore the smallest whose power, simulated from
the forecasts themselves with the planned tests (:func:`predictive_power_curves`),
reaches the target (Landau & Stahl 2013); the closed forms only give the starting point
and are reported next to it. Each simulated trial draws patients with replacement from
the selected ones and each patient's change from its predictive distribution
(:func:`predictive_draws`), chosen by ``TrialDesign.predictive``:

* ``"count"`` (default): the change is ``o + N`` with ``N`` gamma-Poisson (negative
  binomial), mean ``delta_svdh_pred - o`` and the variance the interval implies (at least
  the Poisson variance), ``o = min(delta_svdh_lo, 0)`` (reading noise can make observed
  change negative). This is the simulator's own law of SvdH change (a Poisson count of
  damage steps at a random rate) and keeps its right tail: on oracle forecasts its rapid
  fraction equals the mean ``p_rapid`` where a normal gives 4 points too few.
* ``"normal"``: normal with mean ``delta_svdh_pred`` and the interval's SD, for forecasts of
  a continuous, symmetric change.

Every size is inflated for dropout; the screening ratio (screened per enrolled) is
``N_screened / N_selected`` and the patients to screen for a trial are
``ceil(enrolled * screening ratio)``. The FDA guidance on enrichment (2019) calls this
*prognostic enrichment*: choosing patients more likely to have the event or the
progression the treatment is to prevent, so that an absolute effect is larger and
fewer patients are needed.

References: FDA. Enrichment Strategies for Clinical Trials to Support Determination of
Effectiveness of Human Drugs and Biological Products. Guidance for Industry, March 2019.
Landau S, Stahl D. Sample size and power calculations for medical studies by simulation
when closed form expressions are not available. Stat Methods Med Res 2013;22:324-345.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from progression.enrich.sample_size import (
    ArmSizes,
    inflate_for_dropout,
    n_two_means,
    n_two_proportions,
)
from progression.enrich.selection import (
    PopulationSummary,
    predictive_sd,
    rank_patients,
    summarise,
    top_count,
)
from progression.enrich.stat_tests import proportion_rejects, welch_rejects
from progression.errors import ProgressionError
from progression.scoring import RAPID_RATE, is_rapid

SIZINGS = ("simulation", "formula")
PREDICTIVES = ("count", "normal")
MIN_SD = 1e-3  # SvdH units: a zero-width interval still gets a (tiny) predictive spread


@dataclass(frozen=True)
class TrialDesign:
    """The planned trial. Units: ``horizon`` in years, ``effect`` as a fraction (0.5 = the
    treatment halves mean progression), ``dropout`` as the fraction lost before the
    endpoint, ``allocation`` = treated:control."""

    horizon: float = 1.0
    effect: float = 0.5
    alpha: float = 0.05
    power: float = 0.8
    allocation: float = 1.0
    dropout: float = 0.1
    interval_level: float = 0.9
    method: str = "t"
    sizing: str = "simulation"  # or "formula"
    predictive: str = "count"  # predictive law of one patient's change: "count" or "normal"
    plan_sims: int = 4000  # trials simulated from the forecasts per size search
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sizing not in SIZINGS:
            raise ProgressionError(f"--sizing '{self.sizing}' is unknown; use one of {SIZINGS}")
        if self.predictive not in PREDICTIVES:
            raise ProgressionError(
                f"--predictive '{self.predictive}' is unknown; use one of {PREDICTIVES}"
            )
        if self.plan_sims < 100:
            raise ProgressionError(f"plan_sims must be at least 100 (got {self.plan_sims})")
        if not 0 < self.effect < 1:
            raise ProgressionError(
                f"--effect must be in (0, 1) (got {self.effect}); it is the relative reduction "
                "of mean progression, e.g. 0.5 for a treatment that halves it"
            )
        if not self.horizon > 0:
            raise ProgressionError(f"--horizon must be > 0 years (got {self.horizon})")

    @property
    def rapid_threshold(self) -> float:
        """SvdH change over the horizon that counts as rapid progression (units)."""
        return RAPID_RATE * self.horizon


@dataclass(frozen=True)
class Sizing:
    """One endpoint's sizes: completers needed, patients to enrol, patients to screen.

    ``control`` / ``treated`` are the expected mean change (SvdH units) or the expected
    proportion of rapid progressors in each arm. ``formula`` is the closed-form size of
    completers; ``completers`` the size used (``sized_by`` says whether the formula or the
    simulation from the forecasts gave it). Sizes are None when the endpoint cannot be
    sized (``note`` says why).
    """

    endpoint: str
    control: float
    treated: float
    completers: ArmSizes | None = None
    enrolled: ArmSizes | None = None
    screened: int | None = None
    sd_control: float | None = None
    sd_treated: float | None = None
    formula: ArmSizes | None = None
    sized_by: str = "formula"
    note: str = ""


@dataclass(frozen=True)
class SelectorPlan:
    """A selector's enriched population and the trial sized on it."""

    name: str
    n_screened: int
    n_selected: int
    summary: PopulationSummary
    mean: Sizing
    rapid: Sizing

    @property
    def fraction(self) -> float:
        return self.n_selected / self.n_screened

    @property
    def screening_ratio(self) -> float:
        """Patients screened per patient enrolled."""
        return self.n_screened / self.n_selected


def _count_law(frame: pd.DataFrame, design: TrialDesign) -> tuple[np.ndarray, ...]:
    """Per patient: offset ``o``, mean ``m`` and gamma shape ``k`` of the count law (inf =
    Poisson) of :func:`predictive_draws`."""
    means = frame["delta_svdh_pred"].to_numpy(float)
    sds = np.maximum(predictive_sd(frame["delta_svdh_lo"], frame["delta_svdh_hi"],
                                   design.interval_level), MIN_SD)
    offset = np.minimum(frame["delta_svdh_lo"].to_numpy(float), 0.0)
    m = np.maximum(means - offset, MIN_SD)
    extra = sds**2 - m  # variance beyond the Poisson's, from the rate's spread
    with np.errstate(divide="ignore"):
        shape = np.where(extra > 1e-9, m**2 / np.maximum(extra, 1e-9), np.inf)
    return offset, m, shape


def predictive_draws(frame: pd.DataFrame, design: TrialDesign, who: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Changes (SvdH units over the horizon) of patients ``who`` (row positions of ``frame``,
    any shape), each drawn from its predictive distribution (``design.predictive``, module
    docstring)."""
    if design.predictive == "normal":
        means = frame["delta_svdh_pred"].to_numpy(float)
        sds = predictive_sd(frame["delta_svdh_lo"], frame["delta_svdh_hi"],
                            design.interval_level)
        return means[who] + sds[who] * rng.standard_normal(who.shape)
    offset, m, shape = _count_law(frame, design)
    k = shape[who]
    finite = np.isfinite(k)
    rate = np.where(finite, rng.gamma(np.where(finite, k, 1.0), m[who] / np.where(finite, k, 1.0)),
                    m[who])
    return offset[who] + rng.poisson(rate)


def treated_rapid_fraction(frame: pd.DataFrame, design: TrialDesign) -> float:
    """Expected rapid-progressor fraction under treatment: the mean over patients of
    P((1 - effect) x change >= threshold) under the predictive law (module docstring)."""
    threshold = design.rapid_threshold / (1 - design.effect)
    if design.predictive == "normal":
        means = frame["delta_svdh_pred"].to_numpy(float)
        sds = np.maximum(predictive_sd(frame["delta_svdh_lo"], frame["delta_svdh_hi"],
                                       design.interval_level), MIN_SD)
        return float(np.mean(stats.norm.sf((threshold - means) / sds)))
    offset, m, shape = _count_law(frame, design)
    steps = np.ceil(threshold - offset - 1e-9) - 1  # P(N >= c) = sf(c - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma_poisson = stats.nbinom.sf(steps, shape, shape / (shape + m))
    return float(np.mean(np.where(np.isfinite(shape), gamma_poisson, stats.poisson.sf(steps, m))))


def _screened(enrolled: ArmSizes, n_screened: int, n_selected: int) -> int:
    return math.ceil(enrolled.total * n_screened / n_selected - 1e-9)


def _prefix_arm(draws: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (ddof=1) of the first ``n`` columns of ``draws``, for every n."""
    total = np.cumsum(draws, axis=1)[:, n - 1]
    squares = np.cumsum(draws**2, axis=1)[:, n - 1]
    mean = total / n
    return mean, (squares - total * mean) / (n - 1)


def predictive_power_curves(frame: pd.DataFrame, design: TrialDesign,
                            n_max: int) -> dict[str, np.ndarray]:
    """Power of the planned tests with n = 0..n_max control completers, simulated from the
    forecasts: each trial draws patients from ``frame`` with replacement and each patient's
    change from :func:`predictive_draws`; the treated arm's change is scaled by
    ``1 - effect``. Keys ``mean_change`` (Welch's t-test, or z) and ``rapid`` (the
    two-proportion test with continuity correction on change >= the rapid threshold).

    Trials are nested (the trial of size n is the first n patients of the trial of size
    n + 1: common random numbers), so the curves are smooth in n. Entries 0 and 1 are 0.
    """
    rng = np.random.default_rng(design.seed)
    n = np.arange(2, n_max + 1)
    n_t = np.maximum(2, np.ceil(design.allocation * n - 1e-9)).astype(int)
    rejections = {"mean_change": np.zeros(n_max + 1), "rapid": np.zeros(n_max + 1)}
    chunk = max(1, min(design.plan_sims, 1_000_000 // (n_max + int(n_t[-1]))))
    for start in range(0, design.plan_sims, chunk):
        rows = min(chunk, design.plan_sims - start)
        control = predictive_draws(frame, design, rng.integers(0, len(frame), (rows, n_max)), rng)
        treated = (1 - design.effect) * predictive_draws(
            frame, design, rng.integers(0, len(frame), (rows, int(n_t[-1]))), rng)
        mean_c, var_c = _prefix_arm(control, n)
        mean_t, var_t = _prefix_arm(treated, n_t)
        rejects = welch_rejects(n, mean_c, var_c, n_t, mean_t, var_t, design.alpha, design.method)
        rejections["mean_change"][2:] += rejects.sum(axis=0)
        x_c = np.cumsum(is_rapid(control, design.horizon), axis=1)[:, n - 1]
        x_t = np.cumsum(is_rapid(treated, design.horizon), axis=1)[:, n_t - 1]
        rejects = proportion_rejects(x_c, n, x_t, n_t, design.alpha)
        rejections["rapid"][2:] += rejects.sum(axis=0)
    return {key: value / design.plan_sims for key, value in rejections.items()}


def simulated_size(frame: pd.DataFrame, design: TrialDesign, endpoint: str,
                   formula: ArmSizes) -> ArmSizes | None:
    """Smallest completers per arm whose power simulated from the forecasts reaches the
    target for ``endpoint`` (None if not found below 8x the formula's size)."""
    n_max = max(8, math.ceil(1.25 * formula.control))
    while n_max <= 8 * max(formula.control, 8):
        curve = predictive_power_curves(frame, design, n_max)[endpoint]
        reached = np.flatnonzero(curve >= design.power)
        if reached.size:
            n = int(reached[0])
            return ArmSizes(n, max(2, math.ceil(design.allocation * n - 1e-9)))
        n_max *= 2
    return None


def _finish(base: Sizing, frame: pd.DataFrame, design: TrialDesign, formula: ArmSizes,
            n_screened: int, n_selected: int) -> Sizing:
    """The size used (simulated or the formula's), inflated for dropout, and the screening."""
    completers, sized_by, note = formula, "formula", ""
    if design.sizing == "simulation":
        simulated = simulated_size(frame, design, base.endpoint, formula)
        if simulated is None:
            note = "simulation from the forecasts found no size up to 8x the formula's; formula used"
        else:
            completers, sized_by = simulated, "simulation"
    enrolled = inflate_for_dropout(completers, design.dropout)
    return dataclasses.replace(base, completers=completers, enrolled=enrolled, formula=formula,
                               sized_by=sized_by, note=note,
                               screened=_screened(enrolled, n_screened, n_selected))


def size_mean(frame: pd.DataFrame, summary: PopulationSummary, design: TrialDesign,
              n_screened: int, n_selected: int | None = None) -> Sizing:
    """Sizes for the mean-change endpoint of a population (proportional effect).

    ``n_selected`` (default ``len(frame)``) of ``n_screened`` are selected: the screening
    ratio."""
    control, treated = summary.mean_delta, (1 - design.effect) * summary.mean_delta
    sd_c, sd_t = summary.sd_delta, (1 - design.effect) * summary.sd_delta
    base = Sizing("mean_change", control, treated, sd_control=sd_c, sd_treated=sd_t)
    try:
        formula = n_two_means(control - treated, sd_c, sd_t, design.alpha, design.power,
                              design.allocation, design.method)
    except ProgressionError as exc:
        return dataclasses.replace(base, note=str(exc))
    return _finish(base, frame, design, formula, n_screened, n_selected or len(frame))


def size_rapid(frame: pd.DataFrame, design: TrialDesign, n_screened: int,
               n_selected: int | None = None) -> Sizing:
    """Sizes for the rapid-progressor-proportion endpoint of a population."""
    control = float(frame["p_rapid"].mean())
    treated = treated_rapid_fraction(frame, design)
    base = Sizing("rapid", control, treated)
    try:
        formula = n_two_proportions(control, treated, design.alpha, design.power,
                                    design.allocation)
    except ProgressionError as exc:
        return dataclasses.replace(base, note=str(exc))
    return _finish(base, frame, design, formula, n_screened, n_selected or len(frame))


def outcome_frame(changes: np.ndarray, design: TrialDesign) -> pd.DataFrame:
    """Realised changes (SvdH units) as forecasts without spread: each patient's forecast
    is its outcome. Sized with ``predictive="normal"`` they are drawn exactly as given."""
    changes = np.asarray(changes, dtype=float)
    return pd.DataFrame({"delta_svdh_pred": changes, "delta_svdh_lo": changes,
                         "delta_svdh_hi": changes,
                         "p_rapid": is_rapid(changes, design.horizon).astype(float)})


def plan_selector(name: str, selected: pd.DataFrame, n_screened: int,
                  design: TrialDesign, reference: np.ndarray | None = None) -> SelectorPlan:
    """Size the trial on the patients ``selected`` out of ``n_screened`` screened.

    ``reference``: realised changes (SvdH units over the horizon) of comparable patients
    that the same selector selects in a cohort with outcomes (e.g. its cross-fitted
    forecasts on the training cohort). When given, the sizes come from simulated trials
    drawn from these outcomes instead of from the forecasts' predictive law: a size that
    holds even when the selector's forecasts are miscalibrated in the enriched group
    (sizing from pilot data; its precision is that of the reference's size).
    """
    summary = summarise(selected, design.interval_level)
    if reference is None:
        frame, law, basis = selected, design, summary
    else:
        frame = outcome_frame(reference, design)
        law = dataclasses.replace(design, predictive="normal")
        basis = summarise(frame, design.interval_level)
    sizes = [size_mean(frame, basis, law, n_screened, len(selected)),
             size_rapid(frame, law, n_screened, len(selected))]
    if reference is not None:
        sizes = [dataclasses.replace(s, sized_by=f"{s.sized_by} from reference outcomes")
                 for s in sizes]
    return SelectorPlan(name=name, n_screened=n_screened, n_selected=len(selected),
                        summary=summary, mean=sizes[0], rapid=sizes[1])


@dataclass
class EnrichmentPlan:
    """All selectors sized with the same design; ``plans['none']`` is no enrichment."""

    design: TrialDesign
    rule: str
    plans: dict[str, SelectorPlan] = field(default_factory=dict)

    def enrichment_ratio(self, name: str) -> dict[str, float]:
        """Enriched / full-cohort expected mean change and rapid fraction."""
        full, sel = self.plans["none"].summary, self.plans[name].summary
        return {
            "mean_delta": sel.mean_delta / full.mean_delta if full.mean_delta else math.nan,
            "rapid_fraction": (sel.rapid_fraction / full.rapid_fraction
                               if full.rapid_fraction else math.nan),
        }

    def saved(self, name: str, endpoint: str) -> dict[str, float] | None:
        """Patients enrolled without enrichment minus with this selector (and as a fraction)."""
        base = getattr(self.plans["none"], endpoint).enrolled
        mine = getattr(self.plans[name], endpoint).enrolled
        if base is None or mine is None:
            return None
        return {"patients": base.total - mine.total,
                "fraction": (base.total - mine.total) / base.total}


def forecast_sizes(selected: pd.DataFrame, n_screened: int,
                   design: TrialDesign) -> dict[str, ArmSizes | None]:
    """Patients to enrol per endpoint (``mean``, ``rapid``) planned from the forecasts."""
    plan = plan_selector("", selected, n_screened, design)
    return {"mean": plan.mean.enrolled, "rapid": plan.rapid.enrolled}


def strictness_curve(
    frame: pd.DataFrame,
    design: TrialDesign,
    fractions: np.ndarray,
    sizes: Callable[[pd.DataFrame], dict[str, ArmSizes | None]] | None = None,
) -> pd.DataFrame:
    """Sizes when the top ``fraction`` of ``frame`` (one horizon) is enrolled, per fraction.

    ``sizes`` maps the enrolled patients' forecasts to patients to enrol per endpoint
    (default: :func:`forecast_sizes`). Columns: fraction, n_selected, n_per_arm_mean
    (enrolled control arm), screened_mean, n_per_arm_rapid, screened_rapid (NaN where an
    endpoint cannot be sized).
    """
    ranked = rank_patients(frame)
    n = len(ranked)
    if sizes is None:
        def sizes(chosen: pd.DataFrame) -> dict[str, ArmSizes | None]:
            return forecast_sizes(chosen, n, design)

    rows = []
    for fraction in fractions:
        k = top_count(float(fraction), n)
        got = sizes(ranked.head(k))
        row = {"fraction": float(fraction), "n_selected": k}
        for endpoint in ("mean", "rapid"):
            arms = got[endpoint]
            row[f"n_per_arm_{endpoint}"] = arms.control if arms else math.nan
            row[f"screened_{endpoint}"] = _screened(arms, n, k) if arms else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
