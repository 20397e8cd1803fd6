"""A real DICOM Part-10 writer (pydicom) shared by the fixtures and the tests that build
their own files; a plain module because the test directory is not a package."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    modality: str = "DX",
    spacing: tuple[float, float] | None = (0.1, 0.1),
    **elements,
) -> Path:
    """Write ``pixels`` (uint16) as an uncompressed DICOM; ``elements`` set extra keywords
    (e.g. ``RescaleSlope=2``, ``WindowCenter=100``)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.set_pixel_data(np.asarray(pixels, dtype=np.uint16), photometric, bits_stored)
    if spacing is not None:
        ds.ImagerPixelSpacing = list(spacing)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path
