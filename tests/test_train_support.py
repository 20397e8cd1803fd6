"""Shared, cached training runs for the model/train/predict tests (no tests in this file).

Fitting even the tiny model costs seconds, so every test module that needs a trained model
uses :func:`shared_run` (one fit per pytest session), with its own MLflow SQLite store and
image cache under a session temporary directory. The cohort is simulated once: 12
patients, 32 px films.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_CACHE: dict[str, object] = {}


@dataclass
class SharedRun:
    root: Path  # session directory (cohort, cache, runs, mlruns.db)
    cohort: Path
    tracking_uri: str
    overrides: list[str]  # the config overrides of the shared fit
    result: object  # progression.train.FitResult


def simulated_cohort(tmp_path_factory) -> Path:
    """A 12-patient simulated cohort with 32 px films (read-only: copy to modify)."""
    if "cohort" not in _CACHE:
        from progression.simulate import SimulationConfig, simulate_cohort

        root = tmp_path_factory.mktemp("model_cohort")
        _CACHE["cohort"] = Path(simulate_cohort(
            root / "cohort",
            SimulationConfig(n_patients=12, seed=0, image_size=32, oracle_draws=16)))
    return _CACHE["cohort"]


def tiny_overrides(cohort: Path, root: Path, tracking_uri: str, **extra: object) -> list[str]:
    """Overrides that make the bundled tiny config fast enough for a test (seconds)."""
    values = {
        "data.path": cohort,
        "data.image_size": 32,
        "data.cache_dir": root / "cache",
        "data.val_fraction": 0.25,
        "train.output_dir": root / "runs",
        "train.progress": False,
        "train.threads": 1,  # tiny convolutions: one thread beats two busy-waiting ones
        "train.max_epochs": 5,
        "train.image_epochs": 2,
        "tracking.tracking_uri": tracking_uri,
        "tracking.experiment": "tests",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def shared_run(tmp_path_factory) -> SharedRun:
    """One tiny fit per session (MLflow pyfunc model logged), reused read-only by tests."""
    if "run" not in _CACHE:
        from progression.config import load_config
        from progression.train import fit

        cohort = simulated_cohort(tmp_path_factory)
        root = tmp_path_factory.mktemp("model_run")
        uri = f"sqlite:///{root / 'mlruns.db'}"
        overrides = tiny_overrides(cohort, root, uri)
        result = fit(load_config("tiny", overrides))
        _CACHE["run"] = SharedRun(root, cohort, uri, overrides, result)
    return _CACHE["run"]
