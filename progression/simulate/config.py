"""Settings of the synthetic cohort (:func:`progression.simulate.simulate_cohort`)."""

from __future__ import annotations

from dataclasses import dataclass

from progression.errors import ConfigError
from progression.scoring import SYSTEMS
from progression.simulate.render import FILM_STYLES


@dataclass
class SimulationConfig:
    """What to simulate. The same config and seed always give byte-identical files.

    Rates are per visit or per patient; times in years; damage in SvdH units.
    """

    n_patients: int = 200
    seed: int = 0
    image_size: int = 256  # pixels along the long (vertical) side; hands/feet are taller than wide
    render_images: bool = True  # False: tables and truth only (fast statistics)
    scored_fraction: float = 0.6  # history visits with SvdH scores (reader-scored)
    joint_scores: bool = True  # write joint_scores.csv for the scored visits
    max_history_years: float = 4.0  # span of a patient's visits up to the index visit
    max_visits: int = 6  # history visits per patient (1 to max_visits)
    followup_years: float = 3.0  # follow-up after the index (truth/followup.csv)
    followup_interval: float = 0.5  # years between follow-up assessments
    n_sites: int = 3  # hospitals; each has its own imaging equipment and file formats
    dicom_fraction: float = 0.5  # of images written as DICOM (the rest PNG, a few TIFF/JPEG)
    style: str = "default"  # the equipment's look (FILM_STYLES); changes the films, never the truth
    biomarker_missing_rate: float = 0.08  # per visit and biomarker
    region_missing_rate: float = 0.08  # per unscored visit and region (no radiograph)
    visit_no_image_rate: float = 0.08  # unscored non-index visits without any radiograph
    no_image_fraction: float = 0.02  # patients without any radiograph
    rate_median: float = 0.9  # SvdH units/yr of a seronegative non-smoker at average inflammation
    rate_sd: float = 1.0  # SD of the log-normal patient random effect on the damage rate
    reader_error: float = 0.1  # chance a reader is off by one grade on a damaged joint
    oracle_draws: int = 256  # Monte Carlo paths per patient for the oracle
    scoring: str = "svdh"  # "larsen": totals in Larsen units (simulate/larsen.py convention)

    def check(self) -> None:
        """Raise ConfigError naming the first invalid setting."""
        rules = [
            ("n_patients", self.n_patients >= 1, "at least 1"),
            ("image_size", self.image_size >= 32, "at least 32 pixels"),
            ("max_visits", self.max_visits >= 1, "at least 1"),
            ("max_history_years", self.max_history_years > 0, "> 0 years"),
            ("followup_years", self.followup_years >= 2, ">= 2 years (truth has 1y and 2y)"),
            ("followup_interval", 0 < self.followup_interval <= 1, "in (0, 1] years"),
            ("n_sites", self.n_sites >= 1, "at least 1"),
            ("rate_median", self.rate_median > 0, "> 0 SvdH units/yr"),
            ("rate_sd", self.rate_sd >= 0, ">= 0"),
            ("oracle_draws", self.oracle_draws >= 16, "at least 16"),
        ]
        for name in (
            "scored_fraction",
            "dicom_fraction",
            "biomarker_missing_rate",
            "region_missing_rate",
            "visit_no_image_rate",
            "no_image_fraction",
            "reader_error",
        ):
            value = getattr(self, name)
            rules.append((name, 0.0 <= value <= 1.0, "a fraction between 0 and 1"))
        rules.append(("scoring", self.scoring in SYSTEMS, "one of " + ", ".join(SYSTEMS)))
        rules.append(("style", self.style in FILM_STYLES,
                      "one of " + ", ".join(FILM_STYLES) + " (--style)"))
        for name, ok, what in rules:
            if not ok:
                raise ConfigError(
                    f"simulation setting '{name}' = {getattr(self, name)!r}; use {what}"
                )
        if round(1.0 / self.followup_interval, 6) % 1:
            raise ConfigError(
                f"simulation setting 'followup_interval' = {self.followup_interval}; use a "
                "divisor of 1 year (0.5, 0.25, ...) so the 1y and 2y outcomes are assessed"
            )
