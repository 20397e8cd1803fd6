"""Read the DICOM header fields an import needs, from one file, without its pixels.

A file is taken as DICOM when it carries the Part-10 marker: 128 bytes of preamble, then
``DICM``. PACS exports name files anything (``IM000123``, ``1.2.840...``, no extension),
so the marker, not the extension, decides. Only the header is parsed
(``stop_before_pixels``): a few kB per file instead of megabytes of pixels.

:func:`read_header` is a top-level function returning a plain dict so that worker
processes can run it (see :func:`progression.cohort.parallel.parallel_map`).
"""

from __future__ import annotations

DICM_OFFSET = 128
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

# Header keywords read from every file (strings; multi-valued ones joined with "\").
FIELDS: tuple[str, ...] = (
    "PatientID",
    "PatientSex",
    "PatientBirthDate",
    "StudyDate",
    "StudyInstanceUID",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "BodyPartExamined",
    "ImageLaterality",
    "Laterality",
    "ViewPosition",
    "ImageType",
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "InstanceNumber",
)


def read_header(path: str) -> dict[str, str]:
    """The :data:`FIELDS` of ``path`` as strings ('' when absent), plus ``path``.

    Never raises for a bad file: ``error`` holds why it could not be read
    (``not_dicom`` when the marker is missing, else the reader's message).
    """
    import pydicom

    out = {"path": path, "error": ""}
    try:
        with open(path, "rb") as handle:  # one open for the marker and the header
            head = handle.read(DICM_OFFSET + 4)
            if len(head) < DICM_OFFSET + 4 or head[DICM_OFFSET:] != b"DICM":
                out["error"] = "not_dicom"
                return out
            handle.seek(0)
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
    except Exception as exc:  # a damaged file is reported per file, never fatal
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    meta_class = str(getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or "")
    out["MediaStorageSOPClassUID"] = meta_class
    for keyword in FIELDS:
        try:
            value = ds.get(keyword, "")
        except Exception:  # an element whose value does not parse counts as absent
            value = ""
        if value is None:
            value = ""
        if isinstance(value, pydicom.multival.MultiValue | list | tuple):
            value = "\\".join(str(v) for v in value)
        out[keyword] = str(value).strip()
    return out
