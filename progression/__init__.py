"""progression: forecast radiographic joint damage in rheumatoid arthritis.

The Python API, in the order of a study (each name is imported on first use, so
``import progression`` stays cheap)::

    import progression as pg

    pg.simulate_cohort("cohort", pg.SimulationConfig(n_patients=60))   # or your own cohort
    pg.simulate_cohort("test", pg.SimulationConfig(n_patients=40, seed=1))
    cohort = pg.read_cohort("cohort")                                  # validated format v1
    result = pg.fit(pg.load_config("tiny", ["data.path=cohort"]))      # one MLflow run
    forecasts = pg.predict_cohort(result.checkpoint_path, cohort)      # predictions table
    report = pg.evaluate_forecasts(result.checkpoint_path, "test", out_dir="evaluation")
    trained = pg.load_trained(result.checkpoint_path)                  # model, config, meta
"""

from __future__ import annotations

# public name -> module that defines it ("module:name" where the name there differs: the
# subpackage ``progression.evaluate`` keeps its name, its entry point is evaluate_forecasts)
_API = {
    "read_cohort": "progression.cohort",
    "Cohort": "progression.cohort",
    "simulate_cohort": "progression.simulate",
    "SimulationConfig": "progression.simulate",
    "load_config": "progression.config",
    "Config": "progression.config",
    "fit": "progression.train",
    "FitResult": "progression.train",
    "predict_cohort": "progression.predict",
    "evaluate_forecasts": "progression.evaluate.report:evaluate",
    "load_trained": "progression.trained",
    "TrainedModel": "progression.trained",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> object:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'progression' has no attribute {name!r}")
    import importlib

    module, _, attribute = module.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
