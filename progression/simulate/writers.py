"""Encode a rendered radiograph the way a hospital archive would hand it over.

DICOM (CR or DX; MONOCHROME1 stores bone dark, MONOCHROME2 bone bright; BitsStored
10-16; RescaleSlope/Intercept; WindowCenter/Width; PixelSpacing and/or
ImagerPixelSpacing), PNG (8 or 16 bit), TIFF (16 bit) or JPEG (8 bit). Every file is
built in memory and written atomically; nothing in it depends on the clock, so the
same seed gives byte-identical files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from progression.io import atomic_write_bytes

_SOP_CLASS = {
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
}
EXTENSIONS = {"dicom": ".dcm", "png8": ".png", "png16": ".png", "tiff": ".tif", "jpeg": ".jpg"}


@dataclass(frozen=True)
class DicomStyle:
    """One site's DICOM conventions."""

    modality: str = "DX"
    photometric: str = "MONOCHROME2"
    bits_stored: int = 12
    slope: float = 1.0
    intercept: float = 0.0


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def encode_dicom(
    img: np.ndarray,
    style: DicomStyle,
    *,
    patient_id: str,
    birth_date: str,
    sex: str,
    study_date: str,
    region: str,
    pixel_mm: float,
    uid_seed: str,
) -> bytes:
    """A DICOM file of ``img`` (float [0, 1], bone bright) in ``style``."""
    top = (1 << style.bits_stored) - 1
    stored = np.rint(np.clip(img, 0.0, 1.0) * (0.9 * top) + 0.05 * top).astype(np.uint16)
    if style.photometric == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)
    sop_uid = _uid(uid_seed, patient_id, study_date, region, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _SOP_CLASS[style.modality]
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"  # pydicom's root
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid(uid_seed, patient_id, study_date, "study")
    ds.SeriesInstanceUID = _uid(uid_seed, patient_id, study_date, region, "series")
    ds.Modality = style.modality
    ds.PatientID = patient_id
    ds.PatientName = f"SIM^{patient_id}"
    ds.PatientBirthDate = birth_date.replace("-", "")
    ds.PatientSex = sex
    ds.StudyDate = study_date.replace("-", "")
    ds.BodyPartExamined = "HAND" if region.startswith("hand") else "FOOT"
    ds.Laterality = "L" if region.endswith("left") else "R"
    ds.ViewPosition = "PA" if region.startswith("hand") else "AP"
    ds.SeriesDescription = region
    ds.Manufacturer = "progression simulator"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = style.photometric
    ds.BitsAllocated = 16
    ds.BitsStored = style.bits_stored
    ds.HighBit = style.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{style.slope:g}"
    ds.RescaleIntercept = f"{style.intercept:g}"
    ds.RescaleType = "US"
    # window over the used range, in rescaled (modality) units
    lo = float(stored.min()) * style.slope + style.intercept
    hi = float(stored.max()) * style.slope + style.intercept
    ds.WindowCenter = f"{(lo + hi) / 2:.1f}"
    ds.WindowWidth = f"{max(hi - lo, 1.0):.1f}"
    spacing = [f"{pixel_mm:.4f}", f"{pixel_mm:.4f}"]
    ds.ImagerPixelSpacing = spacing
    if style.modality == "DX":
        ds.PixelSpacing = [f"{pixel_mm / 1.05:.4f}"] * 2  # at the object, magnification 1.05
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PixelData = stored.astype("<u2").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def encode_pil(img: np.ndarray, fmt: str) -> bytes:
    """PNG (8/16 bit), TIFF (16 bit) or JPEG (8 bit) of ``img`` (float [0, 1], bone bright)."""
    img = np.clip(img, 0.0, 1.0)
    buffer = io.BytesIO()
    if fmt in ("png16", "tiff"):
        pil = Image.fromarray(np.rint(img * 65535).astype(np.uint16))
        pil.save(buffer, format="PNG" if fmt == "png16" else "TIFF")
    else:
        pil = Image.fromarray(np.rint(img * 255).astype(np.uint8))
        if fmt == "jpeg":
            pil.save(buffer, format="JPEG", quality=92)
        else:
            pil.save(buffer, format="PNG")
    return buffer.getvalue()


def write_image(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)
