"""Which covariates a cohort has, of which kind, with which levels: stored with every model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CohortSchema:
    """Covariate columns by kind and the levels of each categorical covariate.

    Static covariates come from patients.csv, time-varying ones from visits.csv. A
    column is numeric when every recorded value parses as a number, else categorical;
    levels are sorted so encodings are stable across runs and subsets.
    """

    static_numeric: tuple[str, ...]
    static_categorical: tuple[str, ...]
    visit_numeric: tuple[str, ...]
    visit_categorical: tuple[str, ...]
    levels: dict[str, tuple[str, ...]]

    def to_dict(self) -> dict:
        """JSON-ready form, stored with a model so prediction encodes covariates the same way."""
        return {
            "static_numeric": list(self.static_numeric),
            "static_categorical": list(self.static_categorical),
            "visit_numeric": list(self.visit_numeric),
            "visit_categorical": list(self.visit_categorical),
            "levels": {k: list(v) for k, v in self.levels.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> CohortSchema:
        return cls(
            static_numeric=tuple(data["static_numeric"]),
            static_categorical=tuple(data["static_categorical"]),
            visit_numeric=tuple(data["visit_numeric"]),
            visit_categorical=tuple(data["visit_categorical"]),
            levels={k: tuple(v) for k, v in data["levels"].items()},
        )
