"""The disease process: latent inflammation, treatment, and joint damage accrual.

Per patient, a latent inflammation level ``u(t)`` follows an Ornstein-Uhlenbeck process
around a patient mean (RF, ACPA, smoking, random) lowered by treatment; treatment
escalates none -> csDMARD -> bDMARD with a hazard that rises with inflammation.
Damage arrives as a Poisson process of single SvdH units with rate (units/year)

    rate(t) = rate_median * exp(0.4 rf + 0.5 acpa + 0.3 smoker + 0.15 log1p(erosion0 / 5)
                               + rate_sd * z + 0.6 u(t)) * protection[treatment(t)]

with ``z`` ~ N(0, 1) truncated at +-2.5 the patient random effect and ``erosion0`` the erosion score at the
first visit. Each unit lands on one joint component (erosion or JSN of one joint) with
probability proportional to a per-patient propensity (site weights shared by both
sides x log-normal noise) times (1 + 2 x the component's current fraction of its
maximum), so damaged joints keep progressing; full components are skipped, so a
component never exceeds its SvdH maximum. Given the state at a time (inflammation,
treatment, grades), the change over ``h`` years is min(N, room) with N ~ Poisson(L) and
L the integrated rate of the random future path: the oracle averages over paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammainc

from progression.scoring import EROSION_MAX, JOINTS, JSN_MAX, RAPID_RATE

TREATMENTS: tuple[str, ...] = ("none", "csdmard", "bdmard")
_INFLAMMATION_SHIFT = np.array([0.0, -0.5, -1.0])  # treatment effect on the inflammation mean
_PROTECTION = np.array([1.0, 0.8, 0.55])  # treatment effect on the damage rate beyond inflammation
_THETA = 1.5  # 1/years: mean reversion of inflammation (~8 months memory)
_SD_U = 0.5  # stationary SD of inflammation around its mean
_B_U = 0.6  # log damage rate per unit inflammation
_KAPPA = 2.0  # damage-begets-damage weight
_STEP = 1.0 / 12.0  # years: simulation grid (monthly)

# component k < n_joints: erosion of JOINTS[k]; k >= n_joints: JSN of JOINTS[k - n_joints]
N_JOINTS = len(JOINTS)
CAPS = np.concatenate([EROSION_MAX, JSN_MAX]).astype(np.int64)

_EROSION_WEIGHT = {
    "mcp1": 0.6, "mcp2": 1.5, "mcp3": 1.3, "mcp4": 0.8, "mcp5": 1.0, "ip": 0.5,
    "pip2": 0.7, "pip3": 0.9, "pip4": 0.7, "pip5": 0.6, "cmc1": 0.4, "trapezium": 0.4,
    "scaphoid": 0.8, "lunate": 0.6, "radius": 0.6, "ulna": 1.2,
}  # fmt: skip
_JSN_WEIGHT = {
    "mcp1": 0.5, "mcp2": 0.9, "mcp3": 0.9, "mcp4": 0.7, "mcp5": 0.7,
    "pip2": 0.6, "pip3": 0.7, "pip4": 0.6, "pip5": 0.6, "cmc3": 0.5, "cmc4": 0.5,
    "cmc5": 0.5, "stt": 0.5, "csl": 0.9, "radiocarpal": 0.8,
}  # fmt: skip
_FOOT_EROSION_WEIGHT = {"ip": 0.5, "mtp1": 1.0, "mtp2": 0.9, "mtp3": 0.9, "mtp4": 1.0, "mtp5": 2.0}
_FOOT_JSN_WEIGHT = {"ip": 0.3, "mtp1": 0.6, "mtp2": 0.6, "mtp3": 0.6, "mtp4": 0.6, "mtp5": 0.7}


def _site_weights() -> np.ndarray:
    ero, jsn = [], []
    for j in JOINTS:
        e_table, j_table = (
            (_EROSION_WEIGHT, _JSN_WEIGHT)
            if j.is_hand
            else (_FOOT_EROSION_WEIGHT, _FOOT_JSN_WEIGHT)
        )
        ero.append(e_table.get(j.site, 0.0) if j.erosion_max else 0.0)
        jsn.append(0.8 * j_table.get(j.site, 0.0) if j.jsn_max else 0.0)
    return np.array(ero + jsn)


SITE_WEIGHTS = _site_weights()
# the same site on both sides shares a key, so propensities are roughly symmetric;
# erosion and JSN components get separate keys
_SIDE_FREE = [f"{'hand' if j.is_hand else 'foot'}_{j.site}" for j in JOINTS]
_NAMES = sorted(set(_SIDE_FREE))
_SITE_KEY = np.array([_NAMES.index(k) for k in _SIDE_FREE] * 2) + np.repeat(
    [0, len(_NAMES)], N_JOINTS
)


@dataclass
class Patient:
    """Latent parameters of one patient (fixed over time)."""

    female: bool
    age: float  # years at the first visit
    rf: int
    acpa: int
    smoker: int
    site: int
    pain: float  # patient-level pain/perception offset (joint counts, HAQ), SD 1
    disease_years: float  # disease duration at the first visit
    inflammation_mean: float  # untreated mean of u
    rate_z: float  # N(0, 1) random effect on the damage rate
    log_rate: float  # log damage rate (SvdH units/yr) at u = 0, untreated
    propensity: np.ndarray  # per component (2 x 56)
    anatomy_scale: float  # hand/foot size relative to the template


def draw_patient(cfg, rng: np.random.Generator) -> tuple[Patient, np.ndarray]:
    """Covariates, latent parameters and the (integer) grades at the first visit."""
    female = bool(rng.random() < 0.7)
    age = float(np.clip(rng.normal(55.0, 12.0), 20.0, 85.0))
    rf = int(rng.random() < 0.7)
    acpa = int(rng.random() < (0.85 if rf else 0.3))
    smoker = int(rng.random() < 0.25)
    site = int(rng.integers(cfg.n_sites))
    pain = float(rng.normal())
    early = rng.random() < 0.35
    disease_years = float(rng.uniform(0.2, 2.0) if early else min(rng.gamma(1.5, 5.0), 25.0))
    inflammation_mean = float(0.3 * rf + 0.3 * acpa + 0.2 * smoker - 0.4 + rng.normal(0.0, 0.7))
    rate_z = float(np.clip(rng.normal(), -2.5, 2.5))  # truncated: no 100-units/yr outliers
    log_cov = np.log(cfg.rate_median) + 0.4 * rf + 0.5 * acpa + 0.3 * smoker + cfg.rate_sd * rate_z
    noise = rng.normal(0.0, 1.0, 2 * N_JOINTS)
    shared = rng.normal(0.0, 1.0, _SITE_KEY.max() + 1)[_SITE_KEY]
    propensity = SITE_WEIGHTS * np.exp(0.6 * shared + 0.4 * noise)
    anatomy_scale = float(np.clip(rng.normal(1.0, 0.03), 0.93, 1.06))
    grades = np.zeros(2 * N_JOINTS, dtype=np.int64)
    # damage before the first visit, in 8 chunks: at the mean inflammation, partly treated,
    # at most 12 units/yr (so even 25 years of disease stay below the SvdH maximum)
    pre_rate = min(0.6 * np.exp(log_cov + _B_U * inflammation_mean), 12.0)
    for n in rng.poisson(pre_rate * disease_years / 8.0, size=8):
        allocate(grades, int(n), propensity, rng)
    erosion0 = grades[:N_JOINTS].sum()
    log_rate = float(log_cov + 0.15 * np.log1p(erosion0 / 5.0))
    patient = Patient(
        female, age, rf, acpa, smoker, site, pain, disease_years, inflammation_mean, rate_z,
        log_rate, propensity, anatomy_scale,
    )  # fmt: skip
    return patient, grades


def allocate(grades: np.ndarray, n: int, propensity: np.ndarray, rng: np.random.Generator) -> int:
    """Add ``n`` SvdH units to ``grades`` in place (capped); returns the units placed."""
    placed = 0
    while n > 0:
        room = CAPS - grades
        weights = propensity * (1.0 + _KAPPA * grades / np.maximum(CAPS, 1)) * (room > 0)
        total = weights.sum()
        if total <= 0:
            break
        draw = rng.multinomial(n, weights / total)
        inc = np.minimum(draw, room)
        grades += inc
        placed += int(inc.sum())
        n = int((draw - inc).sum())
    return placed


def initial_state(patient: Patient, rng: np.random.Generator) -> tuple[float, int]:
    """Inflammation and treatment index at the first visit (bDMARD likelier when inflamed)."""
    p_bio = 0.12 * np.exp(0.8 * patient.inflammation_mean)
    r = rng.random()
    treatment = 2 if r < min(p_bio, 0.5) else (0 if r > 0.78 else 1)
    mean = patient.inflammation_mean + _INFLAMMATION_SHIFT[treatment]
    return float(mean + _SD_U * rng.normal()), treatment


def simulate_paths(
    u0: np.ndarray, treat0: np.ndarray, mean: float, dts: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Inflammation and treatment at the grid times (paths x len(dts)+1), exact OU steps.

    Treatment escalates (none -> csDMARD at up to 2/yr, csDMARD -> bDMARD at up to
    0.6/yr, faster when inflamed) and rarely steps down from bDMARD when quiet.
    """
    n, k_steps = len(u0), len(dts)
    u = np.empty((n, k_steps + 1))
    tr = np.empty((n, k_steps + 1), dtype=np.int64)
    u[:, 0], tr[:, 0] = u0, treat0
    uniforms = rng.random((k_steps, 2, n))
    normals = rng.normal(size=(k_steps, n))
    decay = np.exp(-_THETA * np.asarray(dts))
    spread = _SD_U * np.sqrt(1 - decay * decay)
    up_scale = np.array([2.0, 0.6, 0.0])
    up_shift = np.array([0.0, 0.3, 0.0])
    for k in range(k_steps):
        cur, uk = tr[:, k], u[:, k]
        hazard_up = up_scale[cur] / (1.0 + np.exp(-2.0 * (uk - up_shift[cur])))
        hazard_down = (cur == 2) * 0.15 / (1.0 + np.exp(2.0 * (uk + 0.5)))
        new = (
            cur
            + (uniforms[k, 0] < -np.expm1(-hazard_up * dts[k]))
            - (uniforms[k, 1] < -np.expm1(-hazard_down * dts[k]))
        )
        target = mean + _INFLAMMATION_SHIFT[new]
        u[:, k + 1] = target + (uk - target) * decay[k] + spread[k] * normals[k]
        tr[:, k + 1] = new
    return u, tr


def _poisson_sf(k, lam):
    """P(N > k) for N ~ Poisson(lam) (regularised incomplete gamma; avoids scipy.stats)."""
    k = np.asarray(k, dtype=float)
    return np.where(k < 0, 1.0, gammainc(np.maximum(k, 0.0) + 1.0, lam))


def damage_rate(patient: Patient, u: np.ndarray, treatment: np.ndarray) -> np.ndarray:
    """Expected SvdH units/year given inflammation ``u`` and treatment index."""
    return np.exp(patient.log_rate + _B_U * u) * _PROTECTION[treatment]


def time_grid(visit_times: np.ndarray, followup_years: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid (years from the first visit): monthly up to the index plus visit times, then
    monthly follow-up after the index. Returns the grid and the index position."""
    t_index = visit_times[-1]
    history = np.union1d(np.arange(0.0, t_index, _STEP), visit_times)
    history = history[np.concatenate([[True], np.diff(history) > 1e-9])]
    months = int(round(followup_years / _STEP))
    future = t_index + np.arange(1, months + 1) * _STEP
    return np.concatenate([history, future]), len(history) - 1


@dataclass
class Oracle:
    """Expected change and P(rapid) given the full latent state at the index."""

    delta: dict[float, float]
    p_rapid: dict[float, float]
    q05: dict[float, float]
    q95: dict[float, float]


def oracle_forecast(
    patient: Patient,
    u_index: float,
    treat_index: int,
    grades_index: np.ndarray,
    horizons: tuple[float, ...],
    n_draws: int,
    rng: np.random.Generator,
) -> Oracle:
    """Monte Carlo over future inflammation/treatment paths, closed form for the Poisson."""
    months = int(round(max(horizons) / _STEP))
    dts = np.full(months, _STEP)
    u, tr = simulate_paths(
        np.full(n_draws, u_index),
        np.full(n_draws, treat_index),
        patient.inflammation_mean,
        dts,
        rng,
    )
    rates = damage_rate(patient, u[:, :-1], tr[:, :-1])
    cumulative = np.cumsum(rates * _STEP, axis=1)
    room = int((CAPS - grades_index).sum())
    out = Oracle({}, {}, {}, {})
    for h in horizons:
        lam = cumulative[:, int(round(h / _STEP)) - 1]
        # E[min(N, room)] = L - E[(N - room)+] = L - (L P(N >= room) - room P(N > room))
        expected = lam - (lam * _poisson_sf(room - 1, lam) - room * _poisson_sf(room, lam))
        threshold = int(np.ceil(RAPID_RATE * h - 1e-9))
        p_rapid = _poisson_sf(threshold - 1, lam) if room >= threshold else np.zeros_like(lam)
        ks = np.arange(int(lam.max() * 2 + 6 * np.sqrt(lam.max()) + 10))
        cdf = 1.0 - _poisson_sf(ks[:, None], lam[None, :]).mean(axis=1)
        out.delta[h] = float(expected.mean())
        out.p_rapid[h] = float(p_rapid.mean())
        out.q05[h] = float(min(ks[np.searchsorted(cdf, 0.05)], room))
        out.q95[h] = float(min(ks[min(np.searchsorted(cdf, 0.95), len(ks) - 1)], room))
    return out
