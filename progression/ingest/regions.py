"""Which format-v1 region a radiograph shows, from its DICOM header words.

Sources in order of trust: ``BodyPartExamined`` and ``ImageLaterality`` /
``Laterality`` (coded tags), then words in ``SeriesDescription``, ``StudyDescription``
and ``ProtocolName`` (free text such as ``LEFT HAND``, ``FOOT RIGHT``, ``Hand PA li``).
Coded tags win over free text. Words in English, German and French are known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PART_WORDS: dict[str, str] = {
    "HAND": "hand", "HANDS": "hand", "HAENDE": "hand", "HÄNDE": "hand", "MAIN": "hand",
    "MAINS": "hand", "MANO": "hand",
    "FOOT": "foot", "FEET": "foot", "FOREFOOT": "foot", "FUSS": "foot", "FUß": "foot",
    "FUESSE": "foot", "FÜSSE": "foot", "VORFUSS": "foot", "PIED": "foot", "PIEDS": "foot",
    "PIE": "foot",
}  # fmt: skip
SIDE_WORDS: dict[str, str] = {
    "L": "left", "LT": "left", "LEFT": "left", "LI": "left", "LINKS": "left",
    "GAUCHE": "left",
    "R": "right", "RT": "right", "RIGHT": "right", "RE": "right", "RECHTS": "right",
    "DROITE": "right",
}  # fmt: skip
BOTH_WORDS = frozenset({"B", "BOTH", "BILATERAL", "BILAT", "BEIDE", "BDS"})
_TOKEN = re.compile(r"[^\W\d_]+", re.UNICODE)


@dataclass(frozen=True)
class RegionGuess:
    """``region`` (e.g. ``hand_left``) or None with ``reason`` saying what was missing."""

    region: str | None
    reason: str = ""


def _words(text: str) -> list[str]:
    return [w.upper() for w in _TOKEN.findall(text or "")]


def _parts(words: list[str]) -> set[str]:
    return {PART_WORDS[w] for w in words if w in PART_WORDS}


def _sides(words: list[str]) -> set[str]:
    found = {SIDE_WORDS[w] for w in words if w in SIDE_WORDS}
    if any(w in BOTH_WORDS for w in words):
        found |= {"left", "right"}
    return found


def guess_region(header: dict[str, str]) -> RegionGuess:
    """The region of one DICOM header (strings by keyword, as :func:`read_header` gives)."""
    text = " / ".join(
        header.get(k, "") for k in ("SeriesDescription", "StudyDescription", "ProtocolName")
    )
    text_words = _words(text)
    parts = _parts(_words(header.get("BodyPartExamined", ""))) or _parts(text_words)
    if len(parts) != 1:
        what = "both hand and foot" if parts else "no hand or foot"
        return RegionGuess(
            None,
            f"unknown body part ({what} in BodyPartExamined "
            f"'{header.get('BodyPartExamined', '')}' and descriptions '{text}')",
        )
    side = ""
    for keyword in ("ImageLaterality", "Laterality"):
        code = header.get(keyword, "").upper()
        if code == "B":
            return RegionGuess(None, f"both sides on one film ({keyword} B)")
        if code in ("L", "R"):
            side = SIDE_WORDS[code]
            break
    if not side:
        sides = _sides(text_words)
        if len(sides) != 1:
            what = "both left and right" if sides else "no left/right"
            return RegionGuess(
                None,
                f"unknown laterality (no ImageLaterality/Laterality; {what} in descriptions "
                f"'{text}')",
            )
        side = sides.pop()
    return RegionGuess(f"{parts.pop()}_{side}")
