"""Shared fixtures: tiny cohorts on disk and a DICOM writer, reused by every module's tests.

- ``handmade_cohort``: 3 patients x 2 visits x 2 hands in PNG, DICOM (MONOCHROME1 and 2),
  TIFF and JPEG, with covariates and joint scores; built once per session, never modified.
- ``tiny_cohort``: a simulated format-v1 cohort (progression.simulate), built once.
- ``copy_cohort(src)``: a private copy under tmp_path (mtimes kept) to mutate in a test.
- ``write_dicom(path, pixels, ...)``: a real DICOM Part-10 file written with pydicom.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from dicom_writer import write_dicom
from PIL import Image


def hand_phantom(rng: np.random.Generator, height: int = 40, width: int = 32) -> np.ndarray:
    """A bright 'bone' bar on darker soft tissue on a black background, values in [0, 1]."""
    image = np.zeros((height, width))
    image[4:-4, 6:-6] = 0.35  # soft tissue
    image[6:-6, 12:-12] = 0.9  # bone
    return np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)


def _write_handmade_cohort(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "patients.csv").write_text(
        "patient_id,birth_date,sex,age\np1,1960-05-01,F,59\np2,1955-11-30,M,64\np3,,F,70\n"
    )
    (root / "visits.csv").write_text(
        "patient_id,visit_date,svdh_total,svdh_erosion,svdh_jsn,crp,das28,treatment\n"
        "p1,2019-01-15,10,6,4,12.5,4.1,mtx\n"
        "p1,2020-01-20,14,8,6,8.0,3.2,mtx\n"
        "p2,2019-03-01,3,1,2,,5.0,tnfi\n"
        "p2,2020-02-28,,,,30,5.5,tnfi\n"
        "p3,2019-06-10,40,25,15,3.1,2.4,\n"
        "p3,2021-06-12,47,29,18,2.0,2.0,mtx\n"
    )
    rows = ["patient_id,visit_date,region,path"]
    visits = {
        "p1": ("2019-01-15", "2020-01-20"),
        "p2": ("2019-03-01", "2020-02-28"),
        "p3": ("2019-06-10", "2021-06-12"),
    }
    for pid, dates in visits.items():
        for v, day in enumerate(dates):
            for region in ("hand_left", "hand_right"):
                image = hand_phantom(rng)
                if pid == "p1":  # 8-bit PNG
                    name = f"{pid}_{v}_{region}.png"
                    Image.fromarray((image * 255).astype(np.uint8)).save(root / "images" / name)
                elif pid == "p2":  # DICOM, MONOCHROME1 on the left hand (stored inverted)
                    name = f"{pid}_{v}_{region}.dcm"
                    mono1 = region == "hand_left"
                    stored = (1 - image if mono1 else image) * 4095
                    write_dicom(
                        root / "images" / name,
                        stored.round(),
                        photometric="MONOCHROME1" if mono1 else "MONOCHROME2",
                    )
                else:  # 16-bit TIFF and 8-bit JPEG
                    ext = "tif" if region == "hand_left" else "jpg"
                    name = f"{pid}_{v}_{region}.{ext}"
                    if ext == "tif":
                        Image.fromarray((image * 65535).astype(np.uint16)).save(
                            root / "images" / name
                        )
                    else:
                        Image.fromarray((image * 255).astype(np.uint8)).save(
                            root / "images" / name, quality=95
                        )
                rows.append(f"{pid},{day},{region},images/{name}")
    (root / "images.csv").write_text("\n".join(rows) + "\n")
    (root / "joint_scores.csv").write_text(
        "patient_id,visit_date,joint,erosion,jsn\n"
        "p1,2019-01-15,hand_left_mcp2,2,1\n"
        "p1,2019-01-15,hand_left_ip,1,\n"
        "p1,2020-01-20,hand_left_mcp2,3,2\n"
    )
    return root


@pytest.fixture(scope="session")
def handmade_cohort(tmp_path_factory) -> Path:
    """A small valid cohort in every supported image format (read-only: copy to modify)."""
    return _write_handmade_cohort(tmp_path_factory.mktemp("handmade") / "cohort")


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A simulated cohort: 6 patients, 64 px images, seed 0 (read-only: copy to modify)."""
    from progression.simulate import SimulationConfig, simulate_cohort

    out = tmp_path_factory.mktemp("tiny") / "cohort"
    return Path(
        simulate_cohort(out, SimulationConfig(n_patients=6, seed=0, image_size=64), progress=False)
    )


@pytest.fixture
def copy_cohort(tmp_path):
    """``copy_cohort(src) -> Path``: a copy of a cohort directory with mtimes preserved."""

    def copy(src: Path, name: str = "cohort") -> Path:
        return Path(shutil.copytree(src, tmp_path / name, copy_function=shutil.copy2))

    return copy


@pytest.fixture(name="write_dicom")
def write_dicom_fixture():
    """The :func:`write_dicom` helper, for tests that build their own DICOM files."""
    return write_dicom
