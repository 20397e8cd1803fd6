"""What a clinic records about a simulated patient: when the visits fall, which visits are
scored and filmed, the reader's grading error, and the biomarkers at each visit.

Pure functions of a patient's disease course and one random stream; the order of draws is
part of the simulator's output (same seed, same cohort), so keep it when editing.
"""

from __future__ import annotations

import numpy as np

import progression.simulate.process as process
from progression.columns import DAYS_PER_YEAR
from progression.scoring import REGIONS
from progression.simulate.config import SimulationConfig


def visit_times(cfg: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Visit days from the first visit (strictly increasing), 1 to max_visits of them."""
    weights = np.array([0.1, 0.2, 0.25, 0.2, 0.15, 0.1][: cfg.max_visits])
    weights = np.pad(weights, (0, max(0, cfg.max_visits - len(weights))), constant_values=0.1)
    n = int(rng.choice(np.arange(1, cfg.max_visits + 1), p=weights / weights.sum()))
    if n == 1:
        return np.array([0])
    span = rng.uniform(min(0.5, cfg.max_history_years), cfg.max_history_years)
    gaps = rng.dirichlet(np.full(n - 1, 2.0)) * span
    days = np.rint(np.concatenate([[0.0], np.cumsum(gaps)]) * DAYS_PER_YEAR).astype(int)
    return days + np.arange(n)  # keeps dates distinct when two gaps round to the same day


def observation_plan(cfg: SimulationConfig, n_visits: int, rng_o: np.random.Generator):
    """(has images, scored [visit], region present [visit, region]): which visits are
    scored and which films exist."""
    has_images = bool(rng_o.random() >= cfg.no_image_fraction)
    scored = (rng_o.random(n_visits) < cfg.scored_fraction) & has_images
    region_present = np.ones((n_visits, len(REGIONS)), dtype=bool)
    if not has_images:
        region_present[:] = False
    for v in range(n_visits):
        if not has_images or scored[v]:
            continue
        if v < n_visits - 1 and rng_o.random() < cfg.visit_no_image_rate:
            region_present[v] = False
            continue
        region_present[v] = rng_o.random(len(REGIONS)) >= cfg.region_missing_rate
        if v == n_visits - 1 and not region_present[v].any():
            region_present[v, 0] = True  # the index visit always has a radiograph
    return has_images, scored, region_present


def reader_grades(grades: np.ndarray, error: float, rng: np.random.Generator) -> np.ndarray:
    """A reader's grades: off by one with chance ``error`` where damaged, rare false +1."""
    damaged = grades > 0
    u = rng.random(grades.shape)
    step = np.where(
        damaged, (u < error / 2) * -1 + ((u >= error / 2) & (u < error)), u < error / 30
    )
    return np.clip(grades + step, 0, process.CAPS)


def biomarkers(p: process.Patient, u: float, svdh: int, cfg, rng) -> dict:
    """CRP (mg/L), ESR (mm/h), SJC28, TJC28, DAS28-ESR and HAQ at one visit."""
    z = rng.normal(size=5)
    crp = float(np.clip(np.exp(1.5 + 0.9 * u + 0.45 * z[0]), 0.1, 250.0))
    esr = float(
        np.clip(
            np.exp(3.0 + 0.45 * u + 0.15 * p.female + 0.008 * (p.age - 55) + 0.3 * z[1]), 1, 140
        )
    )
    sjc = int(min(28, rng.poisson(np.exp(0.9 + 0.8 * u))))
    tjc = int(min(28, rng.poisson(np.exp(1.2 + 0.6 * u + 0.4 * p.pain))))
    global_health = float(np.clip(35 + 15 * u + 8 * p.pain + 12 * z[2], 0, 100))
    das28 = 0.56 * np.sqrt(tjc) + 0.28 * np.sqrt(sjc) + 0.70 * np.log(esr) + 0.014 * global_health
    haq = float(np.clip(0.6 + 0.25 * u + 0.25 * p.pain + 0.003 * svdh + 0.25 * z[3], 0, 3))
    row = {
        "crp": round(crp, 1),
        "esr": float(round(esr)),
        "das28": round(float(das28), 2),
        "sjc28": float(sjc),
        "tjc28": float(tjc),
        "haq": round(haq * 8) / 8,
    }
    missing = rng.random(4) < np.array([1.0, 1.0, 0.5, 2.0]) * cfg.biomarker_missing_rate
    for name, gone in zip(("crp", "esr", "sjc28", "haq"), missing):
        if gone:
            row[name] = np.nan
    if missing[2]:
        row["tjc28"] = np.nan
    if missing[1] or missing[2]:
        row["das28"] = np.nan
    return row
