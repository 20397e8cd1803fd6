"""User-facing errors.

Every problem a user can fix (a bad file, a wrong config key, an unreachable tracking
server) is raised as a :class:`ProgressionError`. The CLI prints its message and exits
non-zero without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ProgressionError(Exception):
    """A problem the user can fix; the message names the file/row/key and the fix."""

    exit_code = 2


class ConfigError(ProgressionError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class CohortError(ProgressionError):
    """A cohort directory does not follow format v1."""


class ImageError(ProgressionError):
    """A radiograph cannot be read (missing, corrupt, no pixel data, unsupported)."""


class CheckpointError(ProgressionError):
    """A checkpoint or registered model cannot be used (missing, incompatible config)."""


class TrackingError(ProgressionError):
    """The MLflow tracking store or server cannot be reached or used."""
