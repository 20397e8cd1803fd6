"""Import a DICOM tree (a PACS export) into a cohort in format v1.

Steps: walk every file under the source (any depth, any names; a DICOMDIR is not
needed and is itself listed as not an image), read headers only, in parallel, then
place each file: patient (``PatientID``), visit (``StudyDate``; studies of one patient
within ``visit_window_days`` of the visit's first study join that visit, dated at its
first study) and region (:func:`progression.ingest.regions.guess_region`). Every file
that cannot be placed is listed in ``unplaced.csv`` with its reason. The source tree is
only read.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from progression.cohort.format import EARLIEST_YEAR, IMAGES, PATIENTS, VISITS
from progression.cohort.parallel import default_workers, parallel_map
from progression.columns import SCORE_COLUMNS
from progression.errors import ConfigError
from progression.ingest.headers import DICOMDIR_SOP_CLASS, read_header
from progression.ingest.outdir import building
from progression.ingest.pseudonyms import pseudonym
from progression.ingest.regions import guess_region
from progression.io import atomic_write_csv

logger = logging.getLogger(__name__)

UNPLACED = "unplaced.csv"
# Header reads cost about 1 ms each; below this many files worker start-up (seconds)
# costs more than it saves.
MIN_FILES_FOR_WORKERS = 4000
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC and its multi-frame variants
NON_IMAGE_MODALITIES = frozenset({"SR", "PR", "KO", "DOC", "REG", "SEG", "RWV"})
# Preferred view when a visit has two films of one region: the standard SvdH view is PA.
_PREFERRED_VIEWS = ("PA", "AP", "DP")


@dataclass
class DicomImportResult:
    """What an import did: counts for the summary, the unplaced list, the output path."""

    out: Path
    n_files: int
    n_images: int
    n_patients: int
    n_visits: int
    n_merged_studies: int
    unplaced: pd.DataFrame
    reasons: Counter = field(default_factory=Counter)

    def summary(self, mode: str) -> str:
        lines = [
            f"read {self.n_files} files: {self.n_images} images {mode} into {self.out} "
            f"({self.n_patients} patients, {self.n_visits} visits"
            + (f"; {self.n_merged_studies} studies merged into an earlier visit)"
               if self.n_merged_studies else ")"),
        ]  # fmt: skip
        if len(self.unplaced):
            lines.append(f"not placed: {len(self.unplaced)} files, listed in {self.out / UNPLACED}")
            lines += [f"  {n:6d}  {reason}" for reason, n in self.reasons.most_common()]
        else:
            lines.append("every file was placed")
        lines.append(f"next: progression validate {self.out}")
        return "\n".join(lines)


def find_files(src: Path) -> list[Path]:
    """Every regular file under ``src`` (symbolic links to files included), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file():
                found.append(path)
    return found


def _dicom_date(text: str) -> date | None:
    try:
        return datetime.strptime(text.strip()[:8], "%Y%m%d").date() if text.strip() else None
    except ValueError:
        return None


def _reason_before_placing(header: dict[str, str]) -> tuple[str, str] | None:
    """(short reason, detail) when a file is not a placeable radiograph, else None."""
    error = header["error"]
    if error == "not_dicom":
        return "not DICOM", "no 'DICM' marker at byte 128"
    if error:
        return "unreadable DICOM header", error
    if header.get("MediaStorageSOPClassUID") == DICOMDIR_SOP_CLASS:
        return "DICOMDIR", "the export's index, not an image"
    modality = header.get("Modality", "").upper()
    if modality in NON_IMAGE_MODALITIES:
        return "not an image", f"Modality {modality}"
    image_type = {t.strip().upper() for t in header.get("ImageType", "").split("\\")}
    derived_secondary = {"DERIVED", "SECONDARY"} <= image_type
    if header.get("SOPClassUID", "").startswith(SECONDARY_CAPTURE_PREFIX) or derived_secondary:
        return "secondary capture", (
            f"SOPClassUID {header.get('SOPClassUID', '')}, ImageType {header.get('ImageType', '')}"
        )
    description = header.get("SeriesDescription", "").lower()
    if "LOCALIZER" in image_type or "scout" in description or "localizer" in description:
        return "scout/localizer", (
            f"ImageType {header.get('ImageType', '')}, "
            f"SeriesDescription '{header.get('SeriesDescription', '')}'"
        )
    if not header.get("PatientID", ""):
        return "no PatientID", "the header has no PatientID"
    study_date = _dicom_date(header.get("StudyDate", ""))
    if study_date is None:
        shown = header.get("StudyDate", "")
        return "no StudyDate", f"StudyDate '{shown}'" if shown else "the header has no StudyDate"
    if study_date.year < EARLIEST_YEAR or study_date > date.today():
        return "implausible StudyDate", f"{study_date} is before {EARLIEST_YEAR} or in the future"
    return None


def _view_rank(header: dict[str, str]) -> int:
    view = header.get("ViewPosition", "").upper()
    words = header.get("SeriesDescription", "").upper().split()
    for rank, preferred in enumerate(_PREFERRED_VIEWS):
        if view == preferred or preferred in words:
            return rank
    return len(_PREFERRED_VIEWS)


def place_headers(
    headers: list[dict[str, str]], visit_window_days: int
) -> tuple[pd.DataFrame, list[tuple[str, str]], int]:
    """Place each header: (placed rows, [(path, reason)], merged study count).

    Placed rows have ``path, patient_id, visit_date, region`` (original ids). Headers are
    taken in the given order; of several files with one SOPInstanceUID the first is kept.
    """
    unplaced: list[tuple[str, str]] = []
    seen_uids: dict[str, str] = {}
    candidates = []
    for header in headers:
        reason = _reason_before_placing(header)
        if reason is None:
            uid = header.get("SOPInstanceUID", "")
            if uid and uid in seen_uids:
                reason = ("duplicate SOPInstanceUID", f"same instance as {seen_uids[uid]}")
            elif uid:
                seen_uids[uid] = header["path"]
        if reason is None:
            guess = guess_region(header)
            if guess.region is None:
                reason = (guess.reason.split(" (")[0], guess.reason)
            else:
                candidates.append((header, guess.region))
        if reason is not None:
            unplaced.append((header["path"], f"{reason[0]}: {reason[1]}"))
    rows = pd.DataFrame(
        [
            {
                "path": h["path"],
                "patient_id": h["PatientID"],
                "study_date": _dicom_date(h["StudyDate"]),
                "study_uid": h.get("StudyInstanceUID", ""),
                "region": region,
                "view_rank": _view_rank(h),
            }
            for h, region in candidates
        ],
        columns=["path", "patient_id", "study_date", "study_uid", "region", "view_rank"],
    )
    # A visit opens at a patient's earliest unassigned study and takes every later study
    # within the window of that first date (anchored, so visits never chain).
    visit_of_study = {}
    for patient_id, group in rows.groupby("patient_id", sort=True):
        anchor = None
        for study_date, study_uid in sorted(set(zip(group["study_date"], group["study_uid"]))):
            if anchor is None or (study_date - anchor).days > visit_window_days:
                anchor = study_date
            visit_of_study[(patient_id, study_date, study_uid)] = anchor
    # Studies merged = distinct studies beyond the first of each visit.
    merged = sum(n - 1 for n in Counter((k[0], v) for k, v in visit_of_study.items()).values())
    rows["visit_date"] = [
        visit_of_study[(p, d, u)]
        for p, d, u in zip(rows["patient_id"], rows["study_date"], rows["study_uid"], strict=True)
    ]
    rows = rows.sort_values(["patient_id", "visit_date", "region", "view_rank", "study_date"],
                            kind="stable")  # fmt: skip
    first = ~rows.duplicated(["patient_id", "visit_date", "region"], keep="first")
    kept = rows[first]
    kept_path = {
        (r.patient_id, r.visit_date, r.region): r.path for r in kept.itertuples(index=False)
    }
    for r in rows[~first].itertuples(index=False):
        unplaced.append(
            (
                r.path,
                f"second image of a region at a visit: {r.region} on {r.visit_date} is "
                f"{kept_path[(r.patient_id, r.visit_date, r.region)]} (format v1 holds one "
                "image per region and visit; the PA view is preferred)",
            )
        )
    placed = kept[["path", "patient_id", "visit_date", "region"]].reset_index(drop=True)
    return placed, unplaced, merged


def _patients_table(headers_by_path: dict[str, dict], placed: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for patient_id, group in placed.groupby("patient_id", sort=True):
        sexes = Counter(headers_by_path[p].get("PatientSex", "").upper() for p in group["path"])
        births = Counter(
            _dicom_date(headers_by_path[p].get("PatientBirthDate", "")) for p in group["path"]
        )
        sexes.pop("", None)
        births.pop(None, None)
        for born in [b for b in births if b.year < EARLIEST_YEAR or b > date.today()]:
            births.pop(born)  # validation refuses it; a missing birth date is allowed
        rows.append(
            {
                "patient_id": patient_id,
                "sex": sexes.most_common(1)[0][0] if sexes else "",
                "birth_date": births.most_common(1)[0][0].isoformat() if births else "",
            }
        )
    table = pd.DataFrame(rows, columns=["patient_id", "sex", "birth_date"])
    return table[[c for c in table.columns if c == "patient_id" or (table[c] != "").any()]]


def _pseudonymized_copy(src: str, dst: Path, new_id: str) -> None:
    """Copy ``src`` to ``dst`` with the patient's identifiers replaced by ``new_id``."""
    import pydicom

    ds = pydicom.dcmread(src)
    ds.PatientID = new_id
    ds.PatientName = new_id
    for keyword in ("OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
                    "IssuerOfPatientID"):  # fmt: skip
        if keyword in ds:
            delattr(ds, keyword)
    ds.PatientIdentityRemoved = "NO"  # pseudonymized, not anonymized (PS3.15 E.1)
    ds.save_as(dst)


def import_dicom(
    src: str | Path,
    out: str | Path,
    *,
    mode: str = "copy",
    salt: str | None = None,
    key_table: str | Path | None = None,
    visit_window_days: int = 7,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> DicomImportResult:
    """Build the cohort ``out`` from the DICOM files under ``src``; ``src`` is only read.

    ``mode`` is ``copy`` (files copied into ``out/images``) or ``link`` (symbolic links
    to the files in ``src``). ``salt`` turns patient ids into :func:`pseudonym` s (copies
    get the pseudonym in PatientID/PatientName); ``key_table`` then receives the
    pseudonym -> original id table (CSV, outside ``out``). ``visit_window_days``: studies
    of one patient within this many days of a visit's first study join that visit.
    ``workers``: header-reading processes (None: one per core for big trees).
    """
    src, out = Path(src), Path(out)
    _check_options(src, out, mode, salt, key_table, visit_window_days)
    files = find_files(src)
    if not files:
        raise ConfigError(f"SRC {src} holds no files; is it the right folder?")
    headers = _read_headers(files, workers, progress)
    placed, unplaced, merged = place_headers(headers, visit_window_days)
    patients = _patients_table({h["path"]: h for h in headers}, placed)
    new_id = _new_ids(placed, salt)
    tables = _cohort_tables(placed, patients, new_id)
    unplaced_table = pd.DataFrame(
        [(os.path.relpath(path, src), reason) for path, reason in unplaced],
        columns=["file", "reason"],
    ).sort_values("file", kind="stable")
    with building(out, overwrite) as tmp:
        _place_files(placed, tmp, mode, salt)
        _write_tables(tmp, tables, unplaced_table, new_id, key_table)
    return DicomImportResult(
        out=out,
        n_files=len(files),
        n_images=len(placed),
        n_patients=len(new_id),
        n_visits=len(tables.visits),
        n_merged_studies=merged,
        unplaced=unplaced_table,
        reasons=Counter(reason.split(":")[0] for _, reason in unplaced),
    )


def _check_options(
    src: Path,
    out: Path,
    mode: str,
    salt: str | None,
    key_table: str | Path | None,
    visit_window_days: int,
) -> None:
    """Refuse option combinations that would fail late, leak ids or touch the source."""
    if not src.is_dir():
        raise ConfigError(f"SRC {src} is not a directory; give the folder of the DICOM export")
    if mode not in ("copy", "link"):
        raise ConfigError(f"mode '{mode}' is not copy or link")
    if salt is not None and mode == "link":
        raise ConfigError(
            "--pseudonymize with --link would leave the original patient ids in the linked "
            "files; use --copy (the default) with --pseudonymize"
        )
    if salt is not None and not salt:
        raise ConfigError("--pseudonymize needs a non-empty SALT (keep it secret)")
    if key_table is not None and salt is None:
        raise ConfigError("--key-table needs --pseudonymize SALT")
    if visit_window_days < 0:
        raise ConfigError(f"--visit-window-days {visit_window_days} must be 0 or more")
    src_abs, out_abs = src.resolve(), out.resolve()
    if out_abs == src_abs or src_abs in out_abs.parents or out_abs in src_abs.parents:
        raise ConfigError(
            f"--out {out} and SRC {src} overlap; write the cohort to a directory outside the "
            "export (and not above it)"
        )
    if key_table is not None:
        key_abs = Path(key_table).resolve()
        if out_abs in key_abs.parents or src_abs in key_abs.parents:
            raise ConfigError(
                f"--key-table {key_table} is inside --out or SRC; keep the key table apart "
                "from the data it unlocks"
            )


def _read_headers(files: list[Path], workers: int | None, progress: bool) -> list[dict[str, str]]:
    if workers is None:
        workers = default_workers() if len(files) >= MIN_FILES_FOR_WORKERS else 1
    return list(
        parallel_map(read_header, [str(p) for p in files], workers, progress,
                     desc="reading DICOM headers")
    )  # fmt: skip


def _new_ids(placed: pd.DataFrame, salt: str | None) -> dict[str, str]:
    """Original patient id -> id in the cohort (its pseudonym when ``salt`` is given)."""
    ids = sorted(placed["patient_id"].unique())
    new_id = {p: pseudonym(p, salt) for p in ids} if salt is not None else {p: p for p in ids}
    if len(set(new_id.values())) != len(new_id):
        raise ConfigError("two patient ids gave one pseudonym; choose another --pseudonymize SALT")
    return new_id


@dataclass
class _ImportedTables:
    patients: pd.DataFrame
    visits: pd.DataFrame
    images: pd.DataFrame


def _cohort_tables(
    placed: pd.DataFrame, patients: pd.DataFrame, new_id: dict[str, str]
) -> _ImportedTables:
    """The format v1 tables; adds ``new_id`` and ``rel`` (path in the cohort) to ``placed``."""
    placed["new_id"] = placed["patient_id"].map(new_id)
    placed["visit_date"] = [d.isoformat() for d in placed["visit_date"]]
    folder = _folders(new_id.values())
    placed["rel"] = [
        f"images/{folder[p]}/{d}/{region}.dcm"
        for p, d, region in zip(placed["new_id"], placed["visit_date"], placed["region"],
                                strict=True)
    ]  # fmt: skip
    patients["patient_id"] = patients["patient_id"].map(new_id)
    visits = placed[["new_id", "visit_date"]].drop_duplicates()
    visits = visits.rename(columns={"new_id": "patient_id"}).sort_values(
        ["patient_id", "visit_date"]
    )
    for column in SCORE_COLUMNS:
        visits[column] = ""
    images = placed[["new_id", "visit_date", "region", "rel"]].set_axis(
        ["patient_id", "visit_date", "region", "path"], axis=1
    )
    return _ImportedTables(patients=patients, visits=visits, images=images)


def _place_files(placed: pd.DataFrame, tmp: Path, mode: str, salt: str | None) -> None:
    """Copy (pseudonymized when ``salt`` is given) or link each placed file into ``tmp``."""
    for row in placed.itertuples(index=False):
        target = tmp / row.rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "link":
            os.symlink(os.path.abspath(row.path), target)
        elif salt is not None:
            _pseudonymized_copy(row.path, target, row.new_id)
        else:
            shutil.copy2(row.path, target)


def _write_tables(
    tmp: Path,
    tables: _ImportedTables,
    unplaced_table: pd.DataFrame,
    new_id: dict[str, str],
    key_table: str | Path | None,
) -> None:
    atomic_write_csv(tmp / PATIENTS, tables.patients)
    atomic_write_csv(tmp / VISITS, tables.visits)
    atomic_write_csv(
        tmp / IMAGES, tables.images.sort_values(["patient_id", "visit_date", "region"])
    )
    atomic_write_csv(tmp / UNPLACED, unplaced_table)
    if key_table is not None:  # before the cohort appears: never a cohort without its key
        ids = sorted(new_id)
        keys = pd.DataFrame({"pseudonym": [new_id[p] for p in ids], "patient_id": ids})
        atomic_write_csv(key_table, keys.sort_values("pseudonym"))


def _folders(patient_ids) -> dict[str, str]:
    """A distinct directory name per patient id (ids may hold '/', spaces, ...)."""
    folders: dict[str, str] = {}
    used: set[str] = set()
    for patient_id in sorted(patient_ids):
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in patient_id)
        name = name.strip(".") or "patient"
        base, n = name, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        folders[patient_id] = name
    return folders
