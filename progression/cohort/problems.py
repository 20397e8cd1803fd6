"""Problems found in a cohort, collected into one report instead of stopping at the first.

A user fixing a cohort of thousands of rows wants every problem at once: one
:class:`ValidationReport` lists each :class:`Problem` with the file, the line as the
file shows it (header = line 1), the column, what is wrong and how to fix it.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from progression.errors import CohortError

Severity = Literal["error", "warning"]
MAX_ERRORS_IN_MESSAGE = 500


@dataclass(frozen=True)
class Problem:
    """One problem: ``row`` is the line number in ``file`` (header = 1), None for the file."""

    severity: Severity
    file: str
    row: int | None
    column: str | None
    message: str
    fix: str

    def row_label(self) -> str:
        """'line N' for a CSV file, 'row N' (0-based position) for a DataFrame, else 'file'."""
        if self.row is None:
            return "file"
        return f"line {self.row}" if self.file.endswith(".csv") else f"row {self.row}"

    def location(self) -> str:
        where = self.file if self.row is None else f"{self.file} {self.row_label()}"
        return where + (f", column {self.column}" if self.column else "")

    def render(self) -> str:
        return f"{self.severity}: {self.location()}: {self.message}; fix: {self.fix}"


@dataclass
class ValidationReport:
    """Every problem found in one cohort; ``ok`` when there is no error (warnings allowed)."""

    root: str
    problems: list[Problem] = field(default_factory=list)
    n_patients: int = 0
    n_visits: int = 0
    n_images: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(
        self,
        severity: Severity,
        file: str,
        row: int | None,
        column: str | None,
        message: str,
        fix: str,
    ) -> None:
        self.problems.append(Problem(severity, file, row, column, message, fix))

    def render(self, max_per_file: int | None = None) -> str:
        """Human-readable text grouped by file, errors before warnings within each file."""
        lines = [
            f"Cohort {self.root}: {self.n_patients} patients, {self.n_visits} visits, "
            f"{self.n_images} images"
        ]
        by_file: dict[str, list[Problem]] = defaultdict(list)
        for problem in self.problems:
            by_file[problem.file].append(problem)
        for file, problems in by_file.items():
            problems = sorted(
                problems, key=lambda p: (p.severity != "error", p.row if p.row is not None else 0)
            )
            n_err = sum(p.severity == "error" for p in problems)
            lines.append(f"\n{file}: {n_err} errors, {len(problems) - n_err} warnings")
            shown = problems if max_per_file is None else problems[:max_per_file]
            for p in shown:
                column = f" [{p.column}]" if p.column else ""
                lines.append(f"  {p.severity:7s} {p.row_label()}{column}: {p.message}")
                lines.append(f"          fix: {p.fix}")
            if len(shown) < len(problems):
                lines.append(
                    f"  ... and {len(problems) - len(shown)} more in {file} (--json FILE lists all)"
                )
        verdict = "OK" if self.ok else "FAILED"
        lines.append(
            f"\n{verdict}: {len(self.errors)} errors, {len(self.warnings)} warnings"
            + ("" if self.ok else " (fix the errors, then run `progression validate` again)")
        )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready: counts, ``ok`` and the list of problems as plain dicts."""
        return {
            "root": self.root,
            "ok": self.ok,
            "n_patients": self.n_patients,
            "n_visits": self.n_visits,
            "n_images": self.n_images,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "problems": [dataclasses.asdict(p) for p in self.problems],
        }

    def raise_on_errors(self) -> None:
        """Raise :class:`~progression.errors.CohortError` listing the errors (first 500), if any.

        Problems of a whole file (a missing column, no film found) come first: they explain
        the rest.
        """
        errors = sorted(self.errors, key=lambda p: p.row is not None)
        if not errors:
            return
        shown = [p.render() for p in errors[:MAX_ERRORS_IN_MESSAGE]]
        if len(errors) > len(shown):
            shown.append(
                f"... and {len(errors) - len(shown)} more errors; "
                f"`progression validate {self.root} --json report.json` lists them all"
            )
        raise CohortError(
            f"{self.root}: {len(errors)} error(s) in the cohort (format v1, see "
            "docs/cohort_format.md):\n" + "\n".join(shown)
        )
