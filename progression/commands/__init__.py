"""One module per CLI command: ``add_arguments(parser)`` and ``run(args) -> int``."""

from __future__ import annotations

from pathlib import Path


def refuse_output_in_cohort(output: str | Path, cohort: str | Path, option: str) -> None:
    """Raise ConfigError when ``output`` is the cohort directory or inside it: commands only
    read a user's cohort, so an output there (or one named like its tables) is refused."""
    from progression.errors import ConfigError

    target, root = Path(output).resolve(), Path(cohort).resolve()
    if target == root or root in target.parents:
        raise ConfigError(
            f"{option} {output} is inside the cohort directory {cohort}; the cohort is only "
            "read, never written to: choose a path outside it")
