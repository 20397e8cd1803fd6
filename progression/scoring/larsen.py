"""Larsen score, 1995 revision (Larsen A. J Rheumatol 1995;22:1974-5).

Each scoring unit is graded 0-5 (0 intact bony outlines and normal joint space; 1 erosion
< 1 mm or joint space narrowing; 2 one or several small erosions > 1 mm; 3 marked
erosions; 4 severe erosions, usually no joint space left; 5 mutilating changes).
The 1995 revision drops the thumbs and the first MTP joints and splits each wrist into
four quadrants, giving 32 units: per hand PIP2-5, MCP2-5 and wrist quadrants 1-4, per
foot MTP2-5. Maximum 32 x 5 = 160. (The original 1977 method of Larsen, Dale and Eek
counted the wrist once with weight 5, maximum 250; the Scott 1995 variant is 0-200.
Report which variant you use.)

Joint names follow the SvdH convention ``<region>_<site>``; the wrist quadrants are
``wrist_q1`` to ``wrist_q4``.
"""

from __future__ import annotations

from dataclasses import dataclass

from progression.scoring.svdh import REGIONS

LARSEN_GRADE_MAX: int = 5


@dataclass(frozen=True)
class LarsenJoint:
    """One Larsen scoring unit (graded 0-:data:`LARSEN_GRADE_MAX`)."""

    region: str
    site: str

    @property
    def name(self) -> str:
        return f"{self.region}_{self.site}"


_LARSEN_HAND_SITES = (
    "pip2", "pip3", "pip4", "pip5",
    "mcp2", "mcp3", "mcp4", "mcp5",
    "wrist_q1", "wrist_q2", "wrist_q3", "wrist_q4",
)  # fmt: skip
_LARSEN_FOOT_SITES = ("mtp2", "mtp3", "mtp4", "mtp5")

LARSEN_JOINTS: tuple[LarsenJoint, ...] = tuple(
    LarsenJoint(region, site)
    for region in REGIONS
    for site in (_LARSEN_HAND_SITES if region.startswith("hand") else _LARSEN_FOOT_SITES)
)
LARSEN_MAX_TOTAL: int = LARSEN_GRADE_MAX * len(LARSEN_JOINTS)
