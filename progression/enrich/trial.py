"""Check a sizing against outcomes: realised progression, time to rapid progression, and
simulated trials.

The simulated trial is the proof that a computed size is right, not only computed: it
repeatedly (seeded) draws a trial of the enrolled size from the patients a selector
would enrol, with replacement; each enrolled patient completes with probability
``1 - dropout``; the treated arm's realised change is multiplied by ``1 - effect`` (the
proportional effect the sizing assumed); then the planned test is run on the
completers:

* mean change: Welch's two-sample t-test (the normal reference for ``method="z"``);
* proportion of rapid progressors (change >= ``RAPID_RATE * horizon``): the
  two-proportion z-test with continuity correction (= chi-square with Yates'
  correction, the test the Fleiss size is made for).

A trial "succeeds" when the two-sided test rejects at ``alpha`` in the treatment's
favour; the empirical power is the fraction of successful trials, with its Monte
Carlo standard error ``sqrt(p (1 - p) / n_sim)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from progression.enrich.plan import Sizing, TrialDesign
from progression.enrich.sample_size import ArmSizes, power_two_means, power_two_proportions
from progression.enrich.stat_tests import proportion_rejects, welch_rejects
from progression.errors import ProgressionError
from progression.scoring import is_rapid

CHUNK = 100  # simulated trials drawn at once (bounds memory for large unenriched trials)
N_BOOT = 200  # bootstrap resamples of the pool for the cohort part of the uncertainty


@dataclass(frozen=True)
class SimulatedPower:
    """Empirical vs nominal power of one endpoint's sized trial.

    ``implied`` is the power the closed-form formula gives when fed the realised
    outcomes of the pool (their mean, SD, rapid fractions) instead of the forecasts.
    ``mc_se`` is the Monte Carlo error of ``empirical``; ``cohort_se`` the error that
    comes from validating on a finite cohort (its realised outcomes are one draw of what
    the forecasts describe): the SD of the implied power over bootstrap resamples of the
    pool. Nominal power within ``2 * sqrt(mc_se^2 + cohort_se^2)`` of the empirical power
    is as close as this cohort can show.
    """

    endpoint: str
    enrolled: ArmSizes
    n_sim: int
    nominal: float
    empirical: float
    mc_se: float
    implied: float
    cohort_se: float

    @property
    def total_se(self) -> float:
        return math.sqrt(self.mc_se**2 + self.cohort_se**2)


def _draw(pool: np.ndarray, n: int, n_sim: int, dropout: float,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    values = pool[rng.integers(0, len(pool), size=(n_sim, n))]
    completed = rng.random((n_sim, n)) >= dropout
    return values, completed


def _masked_mean_var(values: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, ...]:
    count = kept.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(kept, values, 0.0).sum(axis=1) / count
        var = np.where(kept, (values - mean[:, None]) ** 2, 0.0).sum(axis=1) / (count - 1)
    return count, mean, var


def simulate_power(pool: np.ndarray, sizing: Sizing, design: TrialDesign, n_sim: int,
                   seed: int, progress: bool = False, label: str = "") -> SimulatedPower:
    """Empirical power of ``sizing`` (mean or rapid endpoint) on realised changes ``pool``.

    ``pool``: realised SvdH change over the horizon of the patients this design enrols.
    """
    if sizing.enrolled is None or sizing.completers is None:
        raise ProgressionError(f"the {sizing.endpoint} endpoint was not sized: {sizing.note}")
    pool = np.asarray(pool, dtype=float)
    if len(pool) < 2:
        raise ProgressionError(
            f"simulated trial '{label}': only {len(pool)} patient(s) with outcomes to draw from"
        )
    rng = np.random.default_rng(seed)
    enrolled, factor = sizing.enrolled, 1 - design.effect
    successes = 0
    chunks = [min(CHUNK, n_sim - start) for start in range(0, n_sim, CHUNK)]
    for size in tqdm(chunks, desc=f"simulated trials {label}".strip(), disable=not progress,
                     leave=False):
        v_c, k_c = _draw(pool, enrolled.control, size, design.dropout, rng)
        v_t, k_t = _draw(pool, enrolled.treated, size, design.dropout, rng)
        v_t = v_t * factor
        if sizing.endpoint == "mean_change":
            rejects = welch_rejects(*_masked_mean_var(v_c, k_c), *_masked_mean_var(v_t, k_t),
                                    design.alpha, design.method)
        else:
            x_c = (is_rapid(v_c, design.horizon) & k_c).sum(axis=1)
            x_t = (is_rapid(v_t, design.horizon) & k_t).sum(axis=1)
            rejects = proportion_rejects(x_c, k_c.sum(axis=1), x_t, k_t.sum(axis=1),
                                         design.alpha)
        successes += int(rejects.sum())
    empirical = successes / n_sim
    return SimulatedPower(
        endpoint=sizing.endpoint,
        enrolled=enrolled,
        n_sim=n_sim,
        nominal=design.power,
        empirical=empirical,
        mc_se=math.sqrt(empirical * (1 - empirical) / n_sim),
        implied=float(implied_power(pool[None, :], sizing, design)[0]),
        cohort_se=float(np.std(implied_power(
            pool[rng.integers(0, len(pool), size=(N_BOOT, len(pool)))], sizing, design))),
    )


def implied_power(pools: np.ndarray, sizing: Sizing, design: TrialDesign) -> np.ndarray:
    """The formula's power at the sized completers, fed realised outcomes instead of forecasts.

    ``pools``: one pool of realised changes per row (SvdH units); one power per row.
    """
    n_c, n_t = sizing.completers.control, sizing.completers.treated
    if sizing.endpoint == "mean_change":
        mean, sd = pools.mean(axis=1), pools.std(axis=1)
        ok = (mean > 0) & (sd > 0)
        power = power_two_means(n_c, n_t, design.effect * mean, np.where(ok, sd, 1.0),
                                (1 - design.effect) * np.where(ok, sd, 1.0), design.alpha,
                                design.method)
        return np.where(ok, power, 0.0)
    p_c = is_rapid(pools, design.horizon).mean(axis=1)
    p_t = is_rapid((1 - design.effect) * pools, design.horizon).mean(axis=1)
    return power_two_proportions(n_c, p_c, p_t, design.alpha, design.allocation)


def realised_progression(outcomes: pd.DataFrame, selected_ids: set[str],
                         horizon: float) -> pd.DataFrame:
    """Realised change (SvdH units) and rapid fraction in selected vs unselected patients.

    ``outcomes``: columns ``patient_id`` and ``delta`` (realised change over ``horizon``).
    """
    chosen = outcomes["patient_id"].isin(selected_ids)
    rows = []
    for group, part in (("selected", outcomes[chosen]), ("unselected", outcomes[~chosen])):
        delta = part["delta"].to_numpy(float)
        rows.append({
            "group": group,
            "n": len(delta),
            "mean_delta": float(delta.mean()) if len(delta) else math.nan,
            "sd_delta": float(delta.std(ddof=1)) if len(delta) > 1 else math.nan,
            "rapid_fraction": float(np.mean(is_rapid(delta, horizon))) if len(delta) else math.nan,
        })
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class SurvivalComparison:
    """Time to rapid progression, selected vs unselected: Kaplan-Meier curves + log-rank."""

    times: pd.DataFrame  # patient_id, years, event, group
    logrank_statistic: float
    logrank_p: float
    event_fraction: dict[str, float]  # by group, at the end of follow-up (KM estimate)


def compare_time_to_rapid(times: pd.DataFrame, selected_ids: set[str]) -> SurvivalComparison:
    """Kaplan-Meier by group and the log-rank test (lifelines).

    ``times``: patient_id, years (to the event or censoring), event (1 = reached).
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    times = times.copy()
    times["group"] = np.where(times["patient_id"].isin(selected_ids), "selected", "unselected")
    sel, rest = times[times["group"] == "selected"], times[times["group"] == "unselected"]
    if sel.empty or rest.empty:
        raise ProgressionError(
            "time to rapid progression: need follow-up of both selected and unselected "
            f"patients (got {len(sel)} selected, {len(rest)} unselected)"
        )
    test = logrank_test(sel["years"], rest["years"], event_observed_A=sel["event"],
                        event_observed_B=rest["event"])
    reached = {}
    for group, part in (("selected", sel), ("unselected", rest)):
        km = KaplanMeierFitter().fit(part["years"], part["event"])
        reached[group] = float(1 - km.survival_function_.iloc[-1, 0])
    return SurvivalComparison(times, float(test.test_statistic), float(test.p_value), reached)
