"""Synthetic RA cohorts with known ground truth: disease process, radiographs, oracle.

``simulate_cohort(out_dir, SimulationConfig(...))`` writes a format-v1 cohort and its
truth under ``out_dir/truth``; ``Oracle.load(out_dir).predictions()`` gives the
best-possible forecasts. See docs/simulator.md.
"""

from __future__ import annotations

from progression.simulate.cohort import HORIZONS, simulate_cohort, simulate_patient
from progression.simulate.config import SimulationConfig
from progression.simulate.oracle import Oracle
from progression.simulate.render import FILM_STYLES, FilmStyle, ImagingProfile, render_region

__all__ = [
    "FILM_STYLES",
    "FilmStyle",
    "HORIZONS",
    "ImagingProfile",
    "Oracle",
    "SimulationConfig",
    "render_region",
    "simulate_cohort",
    "simulate_patient",
]
