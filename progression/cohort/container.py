"""The Cohort container: the validated tables of one cohort, aligned and sorted.

A Cohort comes from a directory (:func:`~progression.cohort.reading.read_cohort`) or from
DataFrames (:meth:`Cohort.from_frames`); both run the same checks
(:mod:`progression.cohort.checks`). Everything downstream (data arrays, baselines,
evaluation, explanations) reads this one container.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from progression.cohort.cells import table_from_frame
from progression.cohort.checks import CheckContext, CohortFrames, run_checks
from progression.cohort.format import IMAGES, JOINT_SCORES, KEY_COLUMNS, PATIENTS, VISITS
from progression.cohort.problems import ValidationReport
from progression.columns import SCORE_COLUMNS
from progression.errors import CohortError
from progression.scoring import DEFAULT_SYSTEM, ScoringSystem, scoring_system


@dataclass
class Cohort(CohortFrames):
    """The validated tables of one cohort (:class:`CohortFrames`: patients, visits, images,
    joint_scores, schema, fingerprint) and ``root``, the directory they came from (resolved;
    None for DataFrames given without one). ``scoring``: the scoring system its scores are in
    (:mod:`progression.scoring.systems`); visits' ``svdh_total`` holds the visit total in
    that system's units whatever the system."""

    root: Path | None = None
    scoring: str = DEFAULT_SYSTEM

    @property
    def system(self) -> ScoringSystem:
        """The :class:`~progression.scoring.ScoringSystem` of :attr:`scoring`."""
        return scoring_system(self.scoring)

    @property
    def patient_ids(self) -> list[str]:
        return self.patients["patient_id"].tolist()

    @property
    def truth_dir(self) -> Path | None:
        """``<root>/truth`` when this is a simulated cohort with ground truth, else None.

        Only evaluation and the simulator's oracle read it; a model never does.
        """
        if self.root is None:
            return None
        truth = Path(self.root) / "truth"
        return truth if (truth / "truth.csv").is_file() else None

    def subset(self, patient_ids) -> Cohort:
        """The same cohort restricted to ``patient_ids``, every table filtered alike.

        The schema (covariate kinds and category levels) is the full cohort's, so a
        train/validation split encodes covariates identically. Unknown ids raise
        :class:`~progression.errors.CohortError`.
        """
        wanted = {str(p) for p in patient_ids}
        unknown = sorted(wanted - set(self.patients["patient_id"]))
        if unknown:
            shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise CohortError(
                f"subset: {len(unknown)} patient_id(s) not in the cohort: {shown}; "
                "use ids from patients.csv"
            )

        def keep(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[frame["patient_id"].isin(wanted)].reset_index(drop=True)

        digest = hashlib.sha256(self.fingerprint.encode())
        digest.update("\n".join(sorted(wanted)).encode())
        return Cohort(
            root=self.root,
            scoring=self.scoring,
            patients=keep(self.patients),
            visits=keep(self.visits),
            images=keep(self.images),
            joint_scores=None if self.joint_scores is None else keep(self.joint_scores),
            schema=self.schema,
            fingerprint=digest.hexdigest()[:16],
        )

    def without_scores(self) -> Cohort:
        """The same cohort with every reader score hidden (SvdH columns of the visits emptied,
        no joint scores): what a cohort of films and covariates alone looks like to a model.

        Calibration uses it to fit the interval correction for histories without a scored
        visit (:func:`progression.train.finalize.calibrate_checkpoint`).
        """
        visits = self.visits.copy()
        for column in SCORE_COLUMNS:
            if column in visits.columns:
                visits[column] = float("nan")
        return replace(self, visits=visits, joint_scores=None,
                       fingerprint=hashlib.sha256(f"{self.fingerprint} unscored".encode())
                       .hexdigest()[:16])

    @classmethod
    def from_frames(
        cls,
        patients: pd.DataFrame,
        visits: pd.DataFrame,
        images: pd.DataFrame | None = None,
        joint_scores: pd.DataFrame | None = None,
        root: str | Path | None = None,
        scoring: str = DEFAULT_SYSTEM,
    ) -> Cohort:
        """A cohort from DataFrames with the columns of the format-v1 CSV files.

        For callers that hold tables in memory (a notebook, an MLflow pyfunc input).
        The same checks as :func:`read_cohort` run; problems name the table and the
        row position (0-based, as ``df.iloc``). With ``root``, image paths are relative
        to it and may not leave it; without, paths may be absolute or relative to the
        working directory. ``images=None`` means no radiographs (covariates only).
        Dates may be datetime64 or YYYY-MM-DD text. ``scoring``: the system of the scores
        (``larsen``: visits give ``larsen_total``).
        """
        if images is None:
            images = pd.DataFrame(columns=list(KEY_COLUMNS[IMAGES]))
        frames = {PATIENTS: patients, VISITS: visits, IMAGES: images, JOINT_SCORES: joint_scores}
        report = ValidationReport(str(root) if root is not None else "DataFrames")
        tables = {
            kind: None if frame is None else table_from_frame(frame, kind, report)
            for kind, frame in frames.items()
        }
        base = Path(root).resolve() if root is not None else None
        system = scoring_system(scoring)
        parts = run_checks(CheckContext(report, base, confined=root is not None, scoring=system),
                           tables)
        report.raise_on_errors()
        assert parts is not None  # no errors -> built
        return cls(root=base, scoring=system.name, **vars(parts))
