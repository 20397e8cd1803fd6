"""From the world to format v1: DICOM trees (PACS exports), score sheets, joint-name maps.

See docs/importing.md. Names are imported on first use so ``progression --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "DicomImportResult": "dicom_tree",
    "import_dicom": "dicom_tree",
    "pseudonym": "pseudonyms",
    "guess_region": "regions",
    "read_header": "headers",
    "JointMap": "joint_map",
    "load_joint_map": "joint_map",
    "ScoreImportResult": "merge_scores",
    "import_scores": "merge_scores",
}
__all__ = [
    "DicomImportResult",
    "JointMap",
    "ScoreImportResult",
    "guess_region",
    "import_dicom",
    "import_scores",
    "load_joint_map",
    "pseudonym",
    "read_header",
]

if TYPE_CHECKING:
    from progression.ingest.dicom_tree import DicomImportResult, import_dicom
    from progression.ingest.headers import read_header
    from progression.ingest.joint_map import JointMap, load_joint_map
    from progression.ingest.merge_scores import ScoreImportResult, import_scores
    from progression.ingest.pseudonyms import pseudonym
    from progression.ingest.regions import guess_region


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'progression.ingest' has no attribute '{name}'")
    return getattr(importlib.import_module(f"progression.ingest.{_EXPORTS[name]}"), name)
