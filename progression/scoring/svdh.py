"""Sharp/van der Heijde (SvdH) joint definitions and aggregation of joint scores to totals.

The modified Sharp score of van der Heijde (J Rheumatol 1989;16:1069 and 2000;27:261)
scores, per hand, 16 erosion sites 0-5 and 15 joint-space-narrowing (JSN) sites 0-4;
per foot, 6 joints with erosion 0-10 (0-5 on each side of the joint) and JSN 0-4.
Maxima: erosion 280, JSN 168, total 448 SvdH units.

Joint names are ``<region>_<site>`` (``hand_left_mcp2``, ``foot_right_mtp5``,
``hand_left_radius``). Site vocabulary (lowercase):

hands
    ``mcp1``-``mcp5`` (erosion + JSN), ``ip`` (thumb interphalangeal; erosion only),
    ``pip2``-``pip5`` (erosion + JSN), ``cmc1`` (base of the first metacarpal; erosion
    only), ``trapezium`` (trapezium and trapezoid, one site; erosion only),
    ``scaphoid`` (navicular), ``lunate``, ``radius`` (distal radius), ``ulna`` (distal
    ulna) (erosion only), ``cmc3``-``cmc5`` (JSN only), ``stt`` (scaphoid-trapezium/
    trapezoid; JSN only), ``csl`` (capitate-scaphoid-lunate, one site; JSN only),
    ``radiocarpal`` (JSN only).
feet
    ``mtp1``-``mtp5`` and ``ip`` (hallux interphalangeal), erosion 0-10 and JSN 0-4.

Each hand therefore has 22 named joints (16 erosion + 15 JSN sites, 9 shared) and each
foot 6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from progression.errors import CohortError

REGIONS: tuple[str, ...] = ("hand_left", "hand_right", "foot_left", "foot_right")


@dataclass(frozen=True)
class Joint:
    """One scored SvdH joint: ``erosion_max`` / ``jsn_max`` are None where not scored."""

    region: str
    site: str
    erosion_max: int | None
    jsn_max: int | None

    @property
    def name(self) -> str:
        return f"{self.region}_{self.site}"

    @property
    def is_hand(self) -> bool:
        return self.region.startswith("hand")


# (site, erosion_max, jsn_max), in radiographic order from the fingers to the wrist.
_HAND_SITES: tuple[tuple[str, int | None, int | None], ...] = (
    ("pip2", 5, 4),
    ("pip3", 5, 4),
    ("pip4", 5, 4),
    ("pip5", 5, 4),
    ("ip", 5, None),
    ("mcp1", 5, 4),
    ("mcp2", 5, 4),
    ("mcp3", 5, 4),
    ("mcp4", 5, 4),
    ("mcp5", 5, 4),
    ("cmc1", 5, None),
    ("cmc3", None, 4),
    ("cmc4", None, 4),
    ("cmc5", None, 4),
    ("trapezium", 5, None),
    ("stt", None, 4),
    ("scaphoid", 5, None),
    ("lunate", 5, None),
    ("csl", None, 4),
    ("radiocarpal", None, 4),
    ("radius", 5, None),
    ("ulna", 5, None),
)
_FOOT_SITES: tuple[tuple[str, int | None, int | None], ...] = (
    ("ip", 10, 4),
    ("mtp1", 10, 4),
    ("mtp2", 10, 4),
    ("mtp3", 10, 4),
    ("mtp4", 10, 4),
    ("mtp5", 10, 4),
)

JOINTS: tuple[Joint, ...] = tuple(
    Joint(region, site, ero, jsn)
    for region in REGIONS
    for site, ero, jsn in (_HAND_SITES if region.startswith("hand") else _FOOT_SITES)
)
JOINT_NAMES: tuple[str, ...] = tuple(j.name for j in JOINTS)
_BY_NAME: dict[str, Joint] = {j.name: j for j in JOINTS}


def joint_by_name(name: str) -> Joint:
    """The :class:`Joint` called ``name`` (e.g. ``hand_left_mcp2``); KeyError lists the valid form."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(
            f"unknown SvdH joint '{name}'; names look like hand_left_mcp2, foot_right_mtp5, "
            "hand_left_radius (see progression.scoring.JOINT_NAMES)"
        ) from None


def joints_in_region(region: str) -> tuple[Joint, ...]:
    """The joints of one region in :data:`JOINTS` order."""
    if region not in REGIONS:
        raise KeyError(f"unknown region '{region}'; use one of {', '.join(REGIONS)}")
    return tuple(j for j in JOINTS if j.region == region)


# Per-joint maxima as arrays aligned with JOINTS (0 where the component is not scored),
# so simulations and models can aggregate without a DataFrame.
EROSION_MAX: np.ndarray = np.array([j.erosion_max or 0 for j in JOINTS], dtype=np.int64)
JSN_MAX: np.ndarray = np.array([j.jsn_max or 0 for j in JOINTS], dtype=np.int64)

REGION_MAX_EROSION: dict[str, int] = {
    r: int(sum(j.erosion_max or 0 for j in joints_in_region(r))) for r in REGIONS
}
REGION_MAX_JSN: dict[str, int] = {
    r: int(sum(j.jsn_max or 0 for j in joints_in_region(r))) for r in REGIONS
}
REGION_MAX_TOTAL: dict[str, int] = {r: REGION_MAX_EROSION[r] + REGION_MAX_JSN[r] for r in REGIONS}
SVDH_MAX_EROSION: int = int(EROSION_MAX.sum())
SVDH_MAX_JSN: int = int(JSN_MAX.sum())
SVDH_MAX_TOTAL: int = SVDH_MAX_EROSION + SVDH_MAX_JSN

_KEYS = ["patient_id", "visit_date"]


def _check_joint_scores(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validated copy with numeric erosion/jsn; raises CohortError naming the row and fix."""
    missing = [c for c in [*_KEYS, "joint", "erosion", "jsn"] if c not in df.columns]
    if missing:
        raise CohortError(
            f"{source}: missing column(s) {', '.join(missing)}; joint scores need "
            "patient_id, visit_date, joint, erosion, jsn"
        )
    out = df[[*_KEYS, "joint", "erosion", "jsn"]].copy().reset_index(drop=True)
    out["patient_id"] = out["patient_id"].astype(str)
    out["joint"] = out["joint"].astype(str).str.strip()
    for col in ("erosion", "jsn"):
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() & out[col].notna() & (out[col].astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise CohortError(
                f"{source} line {i + 2}: {col} '{out.at[i, col]}' is not a number; "
                "write an integer grade or leave it empty"
            )
        out[col] = values.astype(float)
    unknown = ~out["joint"].isin(_BY_NAME)
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise CohortError(
            f"{source} line {i + 2}: unknown joint '{out.at[i, 'joint']}'; names look like "
            "hand_left_mcp2 or foot_right_mtp5 (see docs/scoring.md for the site list)"
        )
    ero_max = out["joint"].map(lambda n: _BY_NAME[n].erosion_max)
    jsn_max = out["joint"].map(lambda n: _BY_NAME[n].jsn_max)
    for col, cap in (("erosion", ero_max), ("jsn", jsn_max)):
        not_scored = cap.isna() & out[col].notna()
        if not_scored.any():
            i = int(np.flatnonzero(not_scored.to_numpy())[0])
            raise CohortError(
                f"{source} line {i + 2}: joint {out.at[i, 'joint']} has no {col} component "
                f"in SvdH; leave its {col} empty"
            )
        out_of_range = out[col].notna() & (
            (out[col] < 0) | (out[col] > cap.fillna(0)) | (out[col] != out[col].round())
        )
        if out_of_range.any():
            i = int(np.flatnonzero(out_of_range.to_numpy())[0])
            raise CohortError(
                f"{source} line {i + 2}: {col} {out.at[i, col]:g} for {out.at[i, 'joint']} "
                f"is outside the SvdH grades 0-{int(cap.iat[i])}; correct the grade"
            )
    dup = out.duplicated([*_KEYS, "joint"], keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise CohortError(
            f"{source} line {i + 2}: joint {out.at[i, 'joint']} is scored twice for patient "
            f"{out.at[i, 'patient_id']} on {out.at[i, 'visit_date']}; keep one row"
        )
    return out


def aggregate_joint_scores(
    joint_scores: pd.DataFrame, source: str = "joint_scores.csv"
) -> pd.DataFrame:
    """Per-visit SvdH totals from per-joint grades.

    Input: long table with ``patient_id, visit_date, joint, erosion, jsn`` (one row per
    joint and visit, empty where the joint has no such component, as in
    ``joint_scores.csv``). Output: one row per (patient_id, visit_date) with
    ``svdh_erosion, svdh_jsn, svdh_total`` and, per region, ``<region>_erosion``,
    ``<region>_jsn``, ``<region>_total`` (all in SvdH units).

    Missing joints: a sum is only given when every site it covers has a grade, because a
    partial sum looks like less damage than the patient has. A region missing one erosion
    site has ``<region>_erosion`` = NaN (and ``<region>_total`` NaN); ``svdh_erosion`` is
    NaN unless all four regions' erosion sums are complete; likewise for JSN.
    Bad rows (unknown joint, grade out of range, duplicates) raise
    :class:`~progression.errors.CohortError` naming ``source`` and the CSV line.
    """
    df = _check_joint_scores(joint_scores, source)
    visits = df[_KEYS].drop_duplicates().reset_index(drop=True)
    if visits.empty:
        cols = [*_KEYS, "svdh_erosion", "svdh_jsn", "svdh_total"]
        cols += [f"{r}_{c}" for r in REGIONS for c in ("erosion", "jsn", "total")]
        return pd.DataFrame(columns=cols)
    out = visits.copy()
    # A grade per visit x joint; NaN where not given.
    ero = df.pivot(index=_KEYS, columns="joint", values="erosion")
    jsn = df.pivot(index=_KEYS, columns="joint", values="jsn")
    ero = ero.reindex(index=pd.MultiIndex.from_frame(visits), columns=list(JOINT_NAMES))
    jsn = jsn.reindex(index=pd.MultiIndex.from_frame(visits), columns=list(JOINT_NAMES))
    for region in REGIONS:
        joints = joints_in_region(region)
        ero_cols = [j.name for j in joints if j.erosion_max is not None]
        jsn_cols = [j.name for j in joints if j.jsn_max is not None]
        for name, grades, cols in (("erosion", ero, ero_cols), ("jsn", jsn, jsn_cols)):
            complete = grades[cols].notna().all(axis=1)
            out[f"{region}_{name}"] = grades[cols].sum(axis=1).where(complete).to_numpy()
        out[f"{region}_total"] = out[f"{region}_erosion"] + out[f"{region}_jsn"]
    # sum(skipna=False) keeps NaN when any region is incomplete.
    out["svdh_erosion"] = out[[f"{r}_erosion" for r in REGIONS]].sum(axis=1, skipna=False)
    out["svdh_jsn"] = out[[f"{r}_jsn" for r in REGIONS]].sum(axis=1, skipna=False)
    out["svdh_total"] = out["svdh_erosion"] + out["svdh_jsn"]
    first = [*_KEYS, "svdh_erosion", "svdh_jsn", "svdh_total"]
    return out[first + [c for c in out.columns if c not in first]]
