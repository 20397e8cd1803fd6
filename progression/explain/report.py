"""The per-patient forecast report: one HTML page a clinician can read without the code.

Layout of what :func:`render_report` writes::

    <out_dir>/report.html          the page (jinja2 template templates/report.html.j2)
    <out_dir>/figures/scores.png   observed and estimated SvdH over time with the forecast
    <out_dir>/figures/joints_hand_left.png, ...  per-joint model reading at the index visit
    <out_dir>/figures/v01_hand_left.png, v01_hand_left_damage.png, ...  radiograph + heatmaps

Figures are PNG files next to the page, referenced by relative paths, so the folder is
self-contained (no network, no scripts): it can be zipped, attached or opened from disk, the
page stays small, and the figures can be reused in slides. The page is built from plain data
(:class:`PatientReport`), so it does not depend on how the model computed it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from progression.columns import DAYS_PER_YEAR
from progression.explain.gradcam import overlay, save_png
from progression.explain.joints import joint_change, reader_total
from progression.io import atomic_write_bytes, atomic_write_text
from progression.plotting import new_figure, png_bytes
from progression.scoring import (
    DEFAULT_SYSTEM,
    SVDH,
    ScoringSystem,
    scoring_system,
)

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
MIN_EFFECT = 0.05  # SvdH units: smaller covariate effects are counted, joint changes not named
MAX_COVARIATES = 8  # rows of the covariate table
MAX_LISTED_CHANGES = 3  # joints named in the caption of a region's per-joint figure
REGION_LABELS = {
    "hand_left": "Left hand",
    "hand_right": "Right hand",
    "foot_left": "Left foot",
    "foot_right": "Right foot",
}


@dataclass
class RegionImage:
    """One radiograph of a visit as the model saw it (``[H, W]`` in 0-1, bone bright) and its
    Grad-CAM maps (same shape, >= 0; None when not computed): ``heatmap`` for the change
    forecast, ``damage_heatmap`` for the model's reading of damage on this film."""

    region: str
    image: np.ndarray
    heatmap: np.ndarray | None = None
    damage_heatmap: np.ndarray | None = None


@dataclass
class VisitView:
    """One visit on the timeline. Scores in SvdH units; ``contribution`` = how much this visit's
    information moved the forecast (SvdH units, integrated gradients; None when unknown)."""

    visit_date: str
    observed_svdh: float | None = None
    estimated_svdh: float | None = None
    contribution: float | None = None
    images: list[RegionImage] = field(default_factory=list)


@dataclass
class CovariateEffect:
    """A clinical variable, its value as shown to the reader (with units) and its effect on the
    forecast in SvdH units compared with an average patient of the training cohort."""

    name: str
    value: str
    effect: float


@dataclass
class PatientReport:
    """Everything the page shows for one patient.

    ``forecasts`` holds the patient's rows of the predictions table (one per horizon).
    ``explained_horizon`` (years) is the horizon the heatmaps and attributions refer to.
    ``joints`` is the per-joint head's reading of every film
    (:func:`progression.explain.joints.joint_readings`; None: not shown, e.g. a
    covariates-only model or one whose per-joint head was not trained).
    """

    patient_id: str
    forecasts: pd.DataFrame
    visits: list[VisitView]
    covariates: list[CovariateEffect] = field(default_factory=list)
    interval_level: float = 0.9
    interval_calibrated: bool = False
    explained_horizon: float = 1.0
    uses_images: bool = True  # False: a covariates-only model (no films, no heatmaps)
    model_name: str = ""
    generated_on: str = ""
    joints: pd.DataFrame | None = None
    scoring: str = DEFAULT_SYSTEM  # the model's scoring system: the units of every score

    @property
    def system(self) -> ScoringSystem:
        return scoring_system(self.scoring)


def _fmt(value: float, signed: bool = False) -> str:
    """One decimal (SvdH units are read in whole grades); two for small signed effects, so
    a +0.04 effect does not read as none."""
    if value is None or not np.isfinite(value):
        return "not available"
    decimals = 2 if signed and abs(value) < 0.095 else 1
    text = f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    return text.lstrip("+-") if float(text) == 0 else text


def _years(h: float) -> str:
    return f"{h:g} year" + ("" if float(h) == 1.0 else "s")


def summary_sentences(report: PatientReport) -> list[str]:
    """The plain-language forecast, one sentence per horizon, e.g. ``Predicted change over 1
    year: +4.2 SvdH units (90% interval 1.0 to 8.1); rapid progression probability 38%.``"""
    level = f"{report.interval_level:.0%}"
    sentences = []
    for row in report.forecasts.sort_values("horizon_years").itertuples(index=False):
        text = (
            f"Predicted change over {_years(row.horizon_years)}: "
            f"{_fmt(row.delta_svdh_pred, signed=True)} {report.system.unit} "
            f"({level} interval {_fmt(row.delta_svdh_lo)} to {_fmt(row.delta_svdh_hi)})"
        )
        if pd.notna(row.p_rapid):
            text += f"; rapid progression probability {row.p_rapid:.0%}"
        sentences.append(text + ".")
    return sentences


def _parse_date(text: str) -> date:
    return date.fromisoformat(str(text)[:10])


def _scores_figure(report: PatientReport, path: Path) -> None:
    """Observed and model-estimated SvdH totals per visit and the forecast with its interval."""
    fig = new_figure(9.4, 3.6, dpi=110)
    ax = fig.subplots()
    dates = [_parse_date(v.visit_date) for v in report.visits]
    obs = [(d, v.observed_svdh) for d, v in zip(dates, report.visits) if v.observed_svdh is not None]
    est = [(d, v.estimated_svdh) for d, v in zip(dates, report.visits) if v.estimated_svdh is not None]
    if obs:
        ax.plot(*zip(*obs), "o", color="#1f4e79", ms=7, label="Scored by a reader")
    if est:
        ax.plot(*zip(*est), "s-", color="#7f7f7f", ms=5, mfc="white", label="Estimated by the model")
    forecasts = report.forecasts.sort_values("horizon_years")
    if not forecasts.empty:
        start = _parse_date(forecasts["index_date"].iloc[0])
        base = float(forecasts["svdh_index_pred"].iloc[0])
        when = [start + timedelta(days=DAYS_PER_YEAR * h) for h in forecasts["horizon_years"]]
        centre = base + forecasts["delta_svdh_pred"].to_numpy(dtype=float)
        lo = base + forecasts["delta_svdh_lo"].to_numpy(dtype=float)
        hi = base + forecasts["delta_svdh_hi"].to_numpy(dtype=float)
        ax.plot([start, *when], [base, *centre], "--", color="#c55a11")
        ax.errorbar(
            when, centre, yerr=[centre - lo, hi - centre], fmt="D", color="#c55a11",
            capsize=5, label=f"Forecast ({report.interval_level:.0%} interval)",
        )
        ax.axvline(start, color="#bbbbbb", lw=1, label="Last visit: forecast made here")
    system = report.system
    ax.set_ylabel(f"{system.unit.split()[0]} total (units, 0-{system.max_total:g})")
    ax.set_xlabel("Date")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.autofmt_xdate()
    _write_png(fig, path)


def _write_png(fig, path: Path) -> None:
    """Lay out ``fig`` and write it as a PNG, atomically."""
    fig.tight_layout()
    atomic_write_bytes(path, png_bytes(fig))


def _site_label(joint: str, region: str) -> str:
    """``hand_left_mcp2`` -> ``MCP2``, ``hand_left_radius`` -> ``Radius``: how joints are
    named on a scoring sheet."""
    site = joint.removeprefix(f"{region}_")
    return site.upper() if re.fullmatch(r"(mcp|pip|mtp|cmc|ip|stt|csl)\d?", site) else site.capitalize()


def _joint_figure(reading: pd.DataFrame, change: pd.DataFrame, path: Path) -> None:
    """One region's film at the index visit, joint by joint: the model's erosion and JSN as
    stacked bars, the reader's grade as a black mark where that joint was scored, and (when
    ``change`` has rows) a lower panel with the change read since the region's first film."""
    region = str(reading["region"].iloc[0])
    x = np.arange(len(reading))
    panels = 2 if len(change) else 1
    fig = new_figure(max(4.2, 0.3 * len(x) + 1.4), 1.1 + 1.7 * panels, dpi=110)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)
    ax = axes[0, 0]
    erosion = reading["erosion_pred"].to_numpy(dtype=float)
    jsn = reading["jsn_pred"].to_numpy(dtype=float)
    ax.bar(x, erosion, color="#1f4e79", label="erosion (model)")
    ax.bar(x, jsn, bottom=erosion, color="#9dc3e6", label="narrowing (model)")
    reader = reader_total(reading["erosion_reader"], reading["jsn_reader"]).to_numpy(dtype=float)
    scored = np.isfinite(reader)
    if scored.any():
        ax.plot(x[scored], reader[scored], "_", color="black", ms=11, mew=2.5, label="reader's score")
    ax.set_ylim(0, max(1.0, float(np.nanmax([*(erosion + jsn), *reader[scored]])) * 1.15))
    ax.set_ylabel("SvdH units", fontsize=8)
    # A foot has 6 joints: its narrow figure takes the legend in two rows.
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3 if len(x) > 10 else 2,
              fontsize=7, frameon=False)
    if len(change):
        delta = change.set_index("joint")["change"].reindex(reading["joint"]).to_numpy(dtype=float)
        low = axes[1, 0]
        low.bar(x, delta, color=np.where(delta >= 0, "#c55a11", "#2e75b6"))
        low.axhline(0, color="#999999", lw=0.8)
        # At least +-1 SvdH unit: a grade is 1 unit, and hundredths must not look like change.
        reach = max(1.0, float(np.nanmax(np.abs(delta), initial=0.0)) * 1.15)
        low.set_ylim(-reach, reach)
        low.set_ylabel(f"change since\n{change['first_date'].iloc[0]}", fontsize=8)
    bottom = axes[-1, 0]
    bottom.set_xticks(x, [_site_label(j, region) for j in reading["joint"]], rotation=90, fontsize=8)
    for a in axes[:, 0]:
        a.tick_params(axis="y", labelsize=7)
        a.grid(axis="y", alpha=0.3)
    _write_png(fig, path)


def _joint_maps(readings: pd.DataFrame, out_dir: Path) -> list[dict]:
    """Write one per-joint figure per region filmed at the index visit (the latest date of
    ``readings``); returns what the page says about each."""
    index_date = readings["visit_date"].max()
    changes = joint_change(readings)
    maps = []
    for region, reading in readings[readings["visit_date"] == index_date].groupby("region", sort=False):
        change = changes[changes["region"] == region]
        name = f"figures/joints_{region}.png"
        _joint_figure(reading, change, out_dir / name)
        reader = reader_total(reading["erosion_reader"], reading["jsn_reader"])
        worse = change[change["change"] >= MIN_EFFECT].nlargest(MAX_LISTED_CHANGES, "change")
        maps.append({
            "label": REGION_LABELS.get(region, region),
            "src": name,
            "total": _fmt(float((reading["erosion_pred"] + reading["jsn_pred"]).sum())),
            # a partly scored region has no reader total to compare with
            "reader": _fmt(float(reader.sum())) if reader.notna().all() else None,
            "scored": bool(reader.notna().any()),
            "first_date": str(change["first_date"].iloc[0]) if len(change) else None,
            "worse": ", ".join(f"{_site_label(j, region)} {_fmt(c, signed=True)}"
                               for j, c in zip(worse["joint"], worse["change"])),
        })
    return maps


def referenced_images(html_path: str | Path) -> list[str]:
    """The ``src`` of every ``<img>`` of a report page, in order: check that a copied or
    uploaded report folder is complete (each is relative to the page's folder)."""
    from html.parser import HTMLParser

    sources: list[str] = []

    class _Images(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "img":
                sources.append(dict(attrs).get("src") or "")

    _Images().feed(Path(html_path).read_text(encoding="utf-8"))
    return sources


def render_report(report: PatientReport, out_dir: str | Path) -> Path:
    """Write ``out_dir/report.html`` and its figures; returns the HTML path."""
    import jinja2

    out_dir = Path(out_dir)
    _scores_figure(report, out_dir / "figures" / "scores.png")
    joint_maps = [] if report.joints is None or report.joints.empty else _joint_maps(report.joints, out_dir)
    timeline = _timeline(report, out_dir)
    forecasts = report.forecasts.sort_values("horizon_years")
    # effects too small to matter would read as noise: list them only as a count
    top = sorted((c for c in report.covariates if abs(c.effect) >= MIN_EFFECT),
                 key=lambda c: abs(c.effect), reverse=True)[:MAX_COVARIATES]
    first = forecasts.iloc[0] if not forecasts.empty else None
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template("report.html.j2").render(
        patient_id=report.patient_id,
        summary=summary_sentences(report),
        index_date=None if first is None else str(first["index_date"]),
        current=None if first is None else _fmt(float(first["svdh_index_pred"])),
        level=f"{report.interval_level:.0%}",
        calibrated=report.interval_calibrated,
        horizon=f"{report.explained_horizon:g}-year",
        rapid_rate=f"{report.system.rapid_rate:.3g}",
        svdh_max=f"{report.system.max_total:g}",
        sdc=f"{report.system.sdc:.3g}",
        unit=report.system.unit,
        is_svdh=report.system.name == SVDH.name,
        notes=_notes(report, forecasts),
        timeline=timeline,
        uses_images=report.uses_images,
        has_heatmaps=any(e["damage"] or e["forecast"] for v in timeline for e in v["images"]),
        covariates=_covariate_bars(top),
        n_small_effects=len(report.covariates) - len(top),
        min_effect=f"{MIN_EFFECT:g}",
        model_name=report.model_name,
        generated_on=report.generated_on,
        joint_maps=joint_maps,
        joint_date=None if not joint_maps else str(report.joints["visit_date"].max()),
        joint_reader=any(m["scored"] for m in joint_maps),
        joint_change=any(m["first_date"] for m in joint_maps),
    )
    path = out_dir / "report.html"
    atomic_write_text(path, html)
    return path


def _timeline(report: PatientReport, out_dir: Path) -> list[dict[str, Any]]:
    """One entry per visit: scores, its contribution and its films with their heatmaps
    (written to ``out_dir/figures``)."""
    figures = out_dir / "figures"
    # one colour scale per kind of map for the whole patient, so films compare
    vmax = {
        kind: max((float(getattr(im, kind).max()) for v in report.visits for im in v.images
                   if getattr(im, kind) is not None), default=0.0)
        for kind in ("heatmap", "damage_heatmap")
    }
    timeline = []
    for number, visit in enumerate(report.visits, start=1):
        images = []
        for im in visit.images:
            stem = f"v{number:02d}_{im.region}"
            save_png(im.image, figures / f"{stem}.png")
            entry = {"label": REGION_LABELS.get(im.region, im.region), "src": f"figures/{stem}.png"}
            for kind, suffix in (("damage_heatmap", "damage"), ("heatmap", "forecast")):
                entry[suffix] = None
                if getattr(im, kind) is not None:
                    name = f"figures/{stem}_{suffix}.png"
                    save_png(overlay(im.image, getattr(im, kind), vmax=vmax[kind]), out_dir / name)
                    entry[suffix] = name
            images.append(entry)
        timeline.append(
            {
                "date": visit.visit_date,
                "observed": None if visit.observed_svdh is None else _fmt(visit.observed_svdh),
                "estimated": None if visit.estimated_svdh is None else _fmt(visit.estimated_svdh),
                "contribution": None
                if visit.contribution is None
                else _fmt(visit.contribution, signed=True),
                "images": images,
            }
        )
    return timeline


def _notes(report: PatientReport, forecasts: pd.DataFrame) -> list[str]:
    """The forecasts' notes, and a caution when the model reads the films unlike the reader."""
    notes = sorted({n for n in forecasts.get("note", pd.Series(dtype=str)).fillna("") if n})
    scored = [v for v in report.visits if v.observed_svdh is not None and v.estimated_svdh is not None]
    sdc = report.system.sdc
    off = sum(abs(v.estimated_svdh - v.observed_svdh) > sdc for v in scored)
    if off:
        notes.append(
            f"the model's reading of the radiographs differs from the reader's score by more than "
            f"{sdc:.3g} {report.system.unit} at {off} of {len(scored)} scored visit"
            f"{'s' if len(scored) > 1 else ''}: treat this forecast with caution")
    return notes


def _covariate_bars(top: list[CovariateEffect]) -> list[dict[str, Any]]:
    """The largest covariate effects as bars scaled to the largest one."""
    scale = max((abs(c.effect) for c in top), default=0.0) or 1.0
    return [
        {
            "name": c.name,
            "value": c.value,
            "effect": _fmt(c.effect, signed=True),
            "width": round(50 * abs(c.effect) / scale, 1),
            "up": c.effect >= 0,
        }
        for c in top
    ]
