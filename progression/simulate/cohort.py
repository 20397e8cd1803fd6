"""Simulate a cohort: patients, visits, radiographs, and the ground truth, in format v1.

Each patient draws from its own random streams derived from (seed, patient number), so
the output is the same whatever the number of worker processes; the disease process,
the observations (biomarkers, reader scores, missingness), the radiographs and the
oracle use separate streams, so e.g. switching images off leaves every table unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

import progression.simulate.process as process
from progression.columns import DAYS_PER_YEAR
from progression.errors import ConfigError
from progression.io import atomic_write_csv, atomic_write_text
from progression.scoring import JOINT_NAMES as _JOINT_NAMES
from progression.scoring import JOINTS, LARSEN, REGIONS, is_rapid
from progression.simulate.config import SimulationConfig
from progression.simulate.larsen import convert_to_larsen
from progression.simulate.observations import (
    biomarkers,
    observation_plan,
    reader_grades,
    visit_times,
)
from progression.simulate.render import FILM_STYLES, FilmStyle, ImagingProfile, render_region
from progression.simulate.writers import (
    EXTENSIONS,
    DicomStyle,
    encode_dicom,
    encode_pil,
    write_image,
)

log = logging.getLogger(__name__)

HORIZONS = (1.0, 2.0)
# Written last: a cohort with this file is complete, and it records the settings that made it.
RECORD = Path("truth") / "simulation.json"
# Present while a simulation runs: what it leaves behind when interrupted may be replaced.
UNFINISHED = Path("truth") / "UNFINISHED"
_N = process.N_JOINTS
_IS_EROSION_SCORED = process.CAPS[:_N] > 0
_IS_JSN_SCORED = process.CAPS[_N:] > 0
_REGION_OF = np.array([REGIONS.index(j.region) for j in JOINTS])
_EPOCH = dt.date(2005, 1, 1)

# Four imaging set-ups; site k uses _SITES[k % 4] (profile, DICOM style, PNG bit depth).
_SITES = (
    (ImagingProfile(1.0, 0.0, 1.0, 0.6, 0.02, 0.08), DicomStyle("CR", "MONOCHROME1", 12), "png16"),
    (ImagingProfile(0.9, 0.05, 0.85, 0.8, 0.03, -0.05), DicomStyle("DX", "MONOCHROME2", 14, 0.5, -1024.0), "png8"),
    (ImagingProfile(1.1, -0.03, 1.2, 0.5, 0.015, 0.12), DicomStyle("DX", "MONOCHROME2", 10, 2.0, 100.0), "png16"),
    (ImagingProfile(0.95, 0.0, 1.1, 0.7, 0.025, 0.0), DicomStyle("CR", "MONOCHROME1", 16), "png8"),
)  # fmt: skip
_PHYSICAL_HEIGHT_MM = {"hand": 230.0, "foot": 260.0}


@dataclass
class _Records:
    """All rows one patient contributes to each output table."""

    patients: list[dict] = field(default_factory=list)
    visits: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    joint_scores: list[dict] = field(default_factory=list)
    truth: list[dict] = field(default_factory=list)
    truth_visits: list[dict] = field(default_factory=list)
    followup: list[dict] = field(default_factory=list)
    joint_truth: list[tuple] = field(default_factory=list)  # (patient, date, kind, grades)
    joint_locations: list[dict] = field(default_factory=list)


def _date(day: int) -> str:
    return (_EPOCH + dt.timedelta(days=int(day))).isoformat()


def _totals(grades: np.ndarray) -> tuple[int, int, int]:
    erosion, jsn = int(grades[:_N].sum()), int(grades[_N:].sum())
    return erosion + jsn, erosion, jsn


def simulate_patient(index: int, cfg: SimulationConfig, out_dir: Path | None) -> _Records:
    """Everything about patient number ``index``; writes its radiographs under ``out_dir``."""
    streams = np.random.SeedSequence([cfg.seed, index]).spawn(4)
    rng_p, rng_o, rng_img, rng_oracle = (np.random.default_rng(s) for s in streams)
    width = max(4, len(str(cfg.n_patients)))
    pid = f"P{index + 1:0{width}d}"
    course = _disease_course(cfg, rng_p)
    patient, u, tr, index_pos = course.patient, course.u, course.tr, course.index_pos
    grades_index = course.snapshots[index_pos]
    oracle = process.oracle_forecast(
        patient, float(u[index_pos]), int(tr[index_pos]), grades_index, HORIZONS,
        cfg.oracle_draws, rng_oracle,
    )  # fmt: skip
    rec = _Records()
    rec.patients.append(_patient_row(pid, course))
    has_images, scored, region_present = observation_plan(cfg, len(course.days), rng_o)
    # Each visit observed, then filmed, then the follow-up: the order of rng_o's draws.
    for v in range(len(course.days)):
        _observe_visit(rec, pid, v, course, cfg, scored[v], rng_o)
        _film_visit(rec, pid, v, course, cfg, region_present[v], rng_o, rng_img, out_dir)
    _follow_up(rec, pid, course, cfg, rng_o)
    rec.truth.append(_truth_row(pid, course, oracle, has_images))
    return rec


@dataclass
class _Course:
    """One patient's disease course (the process stream only). Grid positions are months."""

    patient: process.Patient
    erosion_first: int  # erosion score at the first visit
    first_day: int  # first visit, days after _EPOCH
    birth_day: int
    days: np.ndarray  # visit days from the first visit
    index_pos: int  # grid position of the index (last) visit
    u: np.ndarray  # inflammation on the grid
    tr: np.ndarray  # treatment code on the grid
    snapshots: dict[int, np.ndarray]  # grid position -> true grades
    visit_pos: np.ndarray  # grid position of each visit


def _disease_course(cfg: SimulationConfig, rng_p: np.random.Generator) -> _Course:
    patient, grades = process.draw_patient(cfg, rng_p)
    erosion_first = int(grades[:_N].sum())
    first_day = int(rng_p.integers(0, 12 * 365))
    birth_day = first_day - int(round(patient.age * DAYS_PER_YEAR))
    days = visit_times(cfg, rng_p)
    times = days / DAYS_PER_YEAR
    grid, index_pos = process.time_grid(times, cfg.followup_years)
    u0, treat0 = process.initial_state(patient, rng_p)
    u, tr = process.simulate_paths(
        np.array([u0]), np.array([treat0]), patient.inflammation_mean, np.diff(grid), rng_p
    )
    u, tr = u[0], tr[0]
    rates = process.damage_rate(patient, u[:-1], tr[:-1])
    events = rng_p.poisson(rates * np.diff(grid))
    snapshots = {0: grades.copy()}
    for k, n in enumerate(events):
        if n:
            process.allocate(grades, int(n), patient.propensity, rng_p)
        snapshots[k + 1] = grades.copy()
    visit_pos = np.searchsorted(grid, times - 1e-9)
    return _Course(patient, erosion_first, first_day, birth_day, days, index_pos, u, tr,
                   snapshots, visit_pos)  # fmt: skip


def _patient_row(pid: str, course: _Course) -> dict:
    patient = course.patient
    return {
        "patient_id": pid,
        "birth_date": _date(course.birth_day),
        "sex": "F" if patient.female else "M",
        "rf": patient.rf,
        "acpa": patient.acpa,
        "smoker": patient.smoker,
        "site": f"site{patient.site + 1}",
    }


def _observe_visit(rec: _Records, pid: str, v: int, course: _Course, cfg: SimulationConfig,
                   scored: bool, rng_o: np.random.Generator) -> None:
    """Visit ``v``'s row (reader scores when ``scored``, biomarkers) and its truth."""
    patient, u, tr, visit_pos = course.patient, course.u, course.tr, course.visit_pos
    date = _date(course.first_day + int(course.days[v]))
    g_true = course.snapshots[int(visit_pos[v])]
    total, erosion, jsn = _totals(g_true)
    row = {"patient_id": pid, "visit_date": date}
    if scored:
        g_read = reader_grades(g_true, cfg.reader_error, rng_o)
        row["svdh_total"], row["svdh_erosion"], row["svdh_jsn"] = map(float, _totals(g_read))
        if cfg.joint_scores:
            for j, joint in enumerate(JOINTS):
                rec.joint_scores.append(
                    {
                        "patient_id": pid,
                        "visit_date": date,
                        "joint": joint.name,
                        "erosion": float(g_read[j]) if _IS_EROSION_SCORED[j] else np.nan,
                        "jsn": float(g_read[_N + j]) if _IS_JSN_SCORED[j] else np.nan,
                    }
                )
    else:
        row["svdh_total"] = row["svdh_erosion"] = row["svdh_jsn"] = np.nan
    row.update(biomarkers(patient, float(u[visit_pos[v]]), total, cfg, rng_o))
    row["treatment"] = process.TREATMENTS[int(tr[visit_pos[v]])]
    rec.visits.append(row)
    rec.truth_visits.append(
        {
            "patient_id": pid,
            "visit_date": date,
            "svdh_total_true": total,
            "svdh_erosion_true": erosion,
            "svdh_jsn_true": jsn,
            "inflammation_true": round(float(u[visit_pos[v]]), 4),
            "rate_true": round(
                float(process.damage_rate(patient, u[visit_pos[v]], tr[visit_pos[v]])), 4
            ),
        }
    )
    rec.joint_truth.append((pid, date, "history", g_true))


def _film_visit(rec: _Records, pid: str, v: int, course: _Course, cfg: SimulationConfig,
                region_present: np.ndarray, rng_o: np.random.Generator,
                rng_img: np.random.Generator, out_dir: Path | None) -> None:
    """Visit ``v``'s films: rows of images.csv, the files, the joints' positions on them."""
    patient = course.patient
    site_profile, dicom_style, png_format = _SITES[patient.site % len(_SITES)]
    film_style = FILM_STYLES[cfg.style]
    date = _date(course.first_day + int(course.days[v]))
    g_true = course.snapshots[int(course.visit_pos[v])]
    for r, region in enumerate(REGIONS):
        if not region_present[r]:
            continue
        fmt = _format(rng_o.random(), cfg.dicom_fraction, png_format)
        path = f"images/{pid}/{date}_{region}{EXTENSIONS[fmt]}"
        rec.images.append({"patient_id": pid, "visit_date": date, "region": region, "path": path})
        if not cfg.render_images:
            continue
        img, locations = _render(
            region, g_true, cfg.image_size, rng_img, patient, site_profile, film_style
        )
        if out_dir is not None:
            kind = region.split("_")[0]
            # a larger film around the same anatomy: coarser pixels
            pixel_mm = _PHYSICAL_HEIGHT_MM[kind] / (film_style.field * cfg.image_size)
            if fmt == "dicom":
                data = encode_dicom(
                    img, dicom_style, patient_id=pid, birth_date=_date(course.birth_day),
                    sex="F" if patient.female else "M", study_date=date, region=region,
                    pixel_mm=pixel_mm, uid_seed=f"{cfg.seed}",
                )  # fmt: skip
            else:
                data = encode_pil(img, fmt)
            write_image(out_dir / path, data)
        for site, (x, y) in locations.items():
            rec.joint_locations.append(
                {"path": path, "joint": f"{region}_{site}", "x": round(x, 4), "y": round(y, 4)}
            )


def _index_day(course: _Course) -> int:
    return course.first_day + int(course.days[-1])


def _follow_up(rec: _Records, pid: str, course: _Course, cfg: SimulationConfig,
               rng_o: np.random.Generator) -> None:
    """Scores after the index visit, on the follow-up grid (truth only)."""
    step = cfg.followup_interval
    n_follow = int(round(cfg.followup_years / step))
    follow_pos = [course.index_pos + int(round(step * (k + 1) * 12)) for k in range(n_follow)]
    for k, pos in enumerate(follow_pos):
        years = round(step * (k + 1), 6)
        date = _date(_index_day(course) + int(round(years * DAYS_PER_YEAR)))
        g_true = course.snapshots[pos]
        rec.followup.append(
            {
                "patient_id": pid,
                "visit_date": date,
                "years_from_index": years,
                "svdh_total": float(_totals(reader_grades(g_true, cfg.reader_error, rng_o))[0]),
                "svdh_total_true": _totals(g_true)[0],
            }
        )
        rec.joint_truth.append((pid, date, "followup", g_true))


def _truth_row(pid: str, course: _Course, oracle, has_images: bool) -> dict:
    """The patient's row of truth.csv: true and oracle changes over HORIZONS, hidden state."""
    patient, u, tr, index_pos = course.patient, course.u, course.tr, course.index_pos
    snapshots = course.snapshots
    total_index = _totals(snapshots[index_pos])[0]
    truth = {
        "patient_id": pid,
        "index_date": _date(_index_day(course)),
        "rate_true": round(float(process.damage_rate(patient, u[index_pos], tr[index_pos])), 4),
        "svdh_true_index": total_index,
    }
    for h in HORIZONS:
        pos = index_pos + int(round(h * 12))
        truth[f"delta_true_{h:g}y"] = _totals(snapshots[pos])[0] - total_index
    for h in HORIZONS:
        truth[f"oracle_delta_{h:g}y"] = round(oracle.delta[h], 4)
        truth[f"oracle_delta_q05_{h:g}y"] = oracle.q05[h]
        truth[f"oracle_delta_q95_{h:g}y"] = oracle.q95[h]
        truth[f"oracle_p_rapid_{h:g}y"] = round(oracle.p_rapid[h], 4)
    for h in HORIZONS:
        truth[f"rapid_true_{h:g}y"] = int(is_rapid(truth[f"delta_true_{h:g}y"], h))
    truth.update(
        {
            "rate_log_base": round(patient.log_rate, 4),
            "rate_z": round(patient.rate_z, 4),
            "inflammation_mean": round(patient.inflammation_mean, 4),
            "inflammation_index": round(float(u[index_pos]), 4),
            "treatment_index": process.TREATMENTS[int(tr[index_pos])],
            "disease_years_first_visit": round(patient.disease_years, 3),
            "svdh_erosion_first_visit": course.erosion_first,
            "pain": round(patient.pain, 4),
            "n_visits": len(course.days),
            "has_images": int(has_images),
        }
    )
    return truth


def _format(r: float, dicom_fraction: float, png_format: str) -> str:
    if r < dicom_fraction:
        return "dicom"
    rest = (r - dicom_fraction) / max(1.0 - dicom_fraction, 1e-9)
    return "tiff" if rest < 0.04 else "jpeg" if rest < 0.08 else png_format


def _render(region, grades, size, rng, patient, profile, style: FilmStyle):
    kind = region.split("_")[0]
    joints = [(j, joint) for j, joint in enumerate(JOINTS) if joint.region == region]
    erosion = {joint.site: int(grades[j]) for j, joint in joints}
    jsn = {joint.site: int(grades[_N + j]) for j, joint in joints}
    return render_region(
        kind, region.endswith("right"), erosion, jsn, size, rng, patient.anatomy_scale, profile,
        style,
    )


def _joint_truth_frame(snapshots: list[tuple[str, str, str, np.ndarray]]) -> pd.DataFrame:
    """Long table of true grades: one row per (patient, visit, joint); empty = not scored."""
    n = len(snapshots)
    grades = np.stack([g for *_, g in snapshots]) if n else np.zeros((0, 2 * _N), np.int64)
    erosion = np.where(_IS_EROSION_SCORED, grades[:, :_N], -1).ravel()
    jsn = np.where(_IS_JSN_SCORED, grades[:, _N:], -1).ravel()
    keys = [np.repeat([snap[i] for snap in snapshots], _N) for i in range(3)]
    return pd.DataFrame(
        {
            "patient_id": keys[0],
            "visit_date": keys[1],
            "kind": keys[2],
            "joint": np.tile(_JOINT_NAMES, n),
            "erosion": pd.arrays.IntegerArray(np.maximum(erosion, 0), erosion < 0),
            "jsn": pd.arrays.IntegerArray(np.maximum(jsn, 0), jsn < 0),
        }
    )


def _run(args: tuple[int, SimulationConfig, Path | None]) -> _Records:
    return simulate_patient(*args)


def simulate_cohort(
    out_dir: str | Path,
    cfg: SimulationConfig | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    reuse: bool = False,
) -> Path:
    """Write a format-v1 cohort to ``out_dir`` and its ground truth to ``out_dir/truth``.

    ``workers`` > 1 simulates patients in that many processes (same output). An existing
    non-empty ``out_dir`` is refused unless ``overwrite`` (then it is replaced, but only if
    it is a simulated cohort). ``reuse``: a complete cohort simulated there with the same
    settings (``truth/simulation.json``) is returned untouched, and one left unfinished by
    an interrupted run is replaced; scripts that rerun need nothing else. Returns ``out_dir``.
    """
    cfg = cfg or SimulationConfig()
    cfg.check()
    out = Path(out_dir)
    settings = dataclasses.asdict(cfg)
    if reuse and simulation_settings(out) == settings:
        log.info("reusing the cohort simulated at %s", out)
        return out
    if out.exists() and any(out.iterdir()):
        unfinished = (out / UNFINISHED).exists()
        if not (overwrite or (reuse and unfinished)):
            made = simulation_settings(out)
            differ = ", ".join(f"{k} {made[k]!r} (asked: {v!r})" for k, v in settings.items()
                               if made.get(k) != v) if made else ""
            raise ConfigError(
                f"output directory '{out}' is not empty"
                + (f": it holds a cohort simulated with other settings ({differ})" if differ else "")
                + "; choose a new directory or pass --overwrite to replace it"
            )
        if not (unfinished or (out / "truth" / "truth.csv").exists()):
            raise ConfigError(
                f"refusing to overwrite '{out}': it is not a simulated cohort (no truth/truth.csv)"
            )
        shutil.rmtree(out)
    (out / UNFINISHED).parent.mkdir(parents=True, exist_ok=True)
    (out / UNFINISHED).touch()
    jobs = [(i, cfg, out) for i in range(cfg.n_patients)]
    bar = tqdm(total=cfg.n_patients, desc="simulate", unit="patient", disable=not progress)
    records = []
    workers = max(1, min(workers, cfg.n_patients))
    if workers == 1:
        for job in jobs:
            records.append(_run(job))
            bar.update()
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for rec in pool.map(
                _run, jobs, chunksize=max(1, min(8, cfg.n_patients // (4 * workers)))
            ):
                records.append(rec)
                bar.update()
    bar.close()
    tables = {
        name: [row for rec in records for row in getattr(rec, name)]
        for name in _Records.__dataclass_fields__
    }
    _write(out, tables, cfg)
    if cfg.scoring == LARSEN.name:
        convert_to_larsen(out)
    record = {"settings": settings, "film_style": dataclasses.asdict(FILM_STYLES[cfg.style])}
    atomic_write_text(out / RECORD, json.dumps(record, indent=2) + "\n")
    (out / UNFINISHED).unlink()
    log.info("simulated %d patients -> %s", cfg.n_patients, out)
    return out


def simulation_settings(cohort_dir: str | Path) -> dict | None:
    """The :class:`SimulationConfig` (as a dict) of the complete simulated cohort at
    ``cohort_dir``; None for anything else (a real cohort, an unfinished simulation, one
    written before settings were recorded)."""
    record = Path(cohort_dir) / RECORD
    if not record.is_file() or (Path(cohort_dir) / UNFINISHED).exists():
        return None
    try:
        settings = json.loads(record.read_text())["settings"]
        # a setting added after the cohort was made takes its default, which reproduces it
        return {**dataclasses.asdict(SimulationConfig()), **settings}
    except (OSError, ValueError, KeyError, TypeError):
        return None


# columns holding whole numbers that may be empty: written as integers ("3", not "3.0")
_INTEGER_COLUMNS = ("svdh_total", "svdh_erosion", "svdh_jsn", "sjc28", "tjc28", "erosion", "jsn")


def _write(out: Path, tables: dict[str, list], cfg: SimulationConfig) -> None:
    frame = {name: pd.DataFrame(rows) for name, rows in tables.items() if name != "joint_truth"}
    for table in frame.values():
        for col in _INTEGER_COLUMNS:
            if col in table.columns:
                table[col] = table[col].astype("Int64")
    atomic_write_csv(out / "patients.csv", frame["patients"])
    atomic_write_csv(out / "visits.csv", frame["visits"])
    images = frame["images"]
    if images.empty:
        images = pd.DataFrame(columns=["patient_id", "visit_date", "region", "path"])
    atomic_write_csv(out / "images.csv", images)
    if cfg.joint_scores and not frame["joint_scores"].empty:
        atomic_write_csv(out / "joint_scores.csv", frame["joint_scores"])
    truth = out / "truth"
    atomic_write_csv(truth / "truth.csv", frame["truth"])
    atomic_write_csv(truth / "truth_visits.csv", frame["truth_visits"])
    atomic_write_csv(truth / "followup.csv", frame["followup"])
    if cfg.render_images:  # per-joint truth and positions serve attribution checks on images
        atomic_write_csv(truth / "joint_truth.csv", _joint_truth_frame(tables["joint_truth"]))
        locations = frame["joint_locations"]
        if locations.empty:
            locations = pd.DataFrame(columns=["path", "joint", "x", "y"])
        atomic_write_csv(truth / "joint_locations.csv", locations)
