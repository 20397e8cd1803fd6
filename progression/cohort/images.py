"""Radiograph loading: DICOM, PNG, TIFF and JPEG to one float32 convention.

Every image becomes a float32 array in [0, 1] with bone bright and background dark, the
way a radiologist views a hand or foot film, so the model sees the same thing whichever
format a site exported:

- DICOM (pydicom 3): Modality LUT (Rescale Slope/Intercept) first, then the VOI LUT or
  the stored window (Window Center/Width). Without a usable window a robust percentile
  window (0.5-99.5 %) is used. MONOCHROME1 (low values bright, common for CR) is inverted
  here because pydicom leaves that to the viewer.
- PNG/TIFF/JPEG (Pillow): 8-bit images are divided by 255. 16-bit images (PNG mode
  ``I;16``/``I``, 16-bit TIFF) are scaled by the smallest common detector depth (10, 12,
  14 or 16 bits) that holds their maximum, because exporters often put 12-bit data in a
  16-bit container and dividing by 65535 would leave the image nearly black. These files
  are taken as displayed: bone must already be bright.

:func:`load_image` then resizes the longest side to ``size`` pixels with an antialiasing
filter and pads the rest with 0 (centred), keeping the aspect ratio.
"""

from __future__ import annotations

import stat as stat_module
from pathlib import Path

import numpy as np

from progression.errors import ImageError

DICOM_EXTENSIONS = (".dcm",)
PIL_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
SUPPORTED_EXTENSIONS = DICOM_EXTENSIONS + PIL_EXTENSIONS

# Robust window when a DICOM carries none: the central 99 % of pixel values.
_PERCENTILE_WINDOW = (0.5, 99.5)
# Detector depths tried, smallest first, when scaling 16-bit PNG/TIFF data to [0, 1].
_CONTAINER_BITS = (10, 12, 14, 16)
_COLOR_PHOTOMETRIC = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Radiograph at ``path`` as float32 ``[size, size]`` in [0, 1], bone bright.

    The longest side is resized to ``size`` pixels (antialiased Lanczos), the shorter
    side keeps the aspect ratio and is padded with 0 on both sides. Raises
    :class:`~progression.errors.ImageError` naming the file and the fix for anything it
    cannot read (missing, corrupt, no pixel data, compression without a decoder).
    """
    if size < 1:
        raise ValueError(f"image size must be >= 1 pixel, got {size}")
    image, _ = decode_image(path)
    return fit_to_square(image, size)


def check_image(path: str | Path) -> list[str]:
    """Decode ``path`` fully (header and pixels) and return warnings about usable files.

    Raises :class:`~progression.errors.ImageError` for unreadable files; warnings are
    things the loader copes with but a user should know (e.g. unknown pixel spacing).
    """
    _, warnings = decode_image(path)
    return warnings


def decode_image(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Full-resolution float32 image in [0, 1] (bone bright) and a list of warnings."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise ImageError(
            f"{path}: unsupported file type '{path.suffix}'; convert it to one of "
            f"{', '.join(SUPPORTED_EXTENSIONS)}"
        )
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found; fix the path in images.csv") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror}); check permissions") from None
    if not stat_module.S_ISREG(stat.st_mode):
        raise ImageError(f"{path}: is not a regular file; point images.csv at an image file")
    if stat.st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes); copy the image again")
    try:
        if suffix in DICOM_EXTENSIONS:
            image, warnings = _decode_dicom(path)
        else:
            image, warnings = _decode_pil(path)
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(f"{path}: permission denied; make the file readable") from None
    except Exception as exc:  # noqa: BLE001 - third-party decoders raise anything on bad bytes
        raise ImageError(
            f"{path}: cannot decode the image ({type(exc).__name__}: {exc}); the file is "
            "corrupt or not really a "
            f"{'DICOM' if suffix in DICOM_EXTENSIONS else suffix.lstrip('.').upper()} file; "
            "export it again"
        ) from None
    if image.ndim != 2 or image.size == 0:
        raise ImageError(f"{path}: image has shape {image.shape}; expected one 2-D image")
    if not np.isfinite(image).all():
        raise ImageError(f"{path}: image contains NaN or infinite pixel values; export it again")
    return image.astype(np.float32, copy=False), warnings


def fit_to_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the longest side of a [0, 1] image to ``size`` and pad to a centred square."""
    from PIL import Image

    h, w = image.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32)).resize(
            (nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
        image = np.asarray(resized, dtype=np.float32)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    # Lanczos overshoots slightly at sharp edges; keep the [0, 1] contract.
    out[top : top + nh, left : left + nw] = np.clip(image, 0.0, 1.0)
    return out


def _decode_dicom(path: Path) -> tuple[np.ndarray, list[str]]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, get_decoder

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise ImageError(
            f"{path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble); "
            "export it again as DICOM Part 10 or as PNG/TIFF"
        ) from None
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError(
            f"{path}: DICOM without pixel data (e.g. a DICOMDIR, report or header-only "
            "file); point images.csv at the image object instead"
        )
    warnings: list[str] = []
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise ImageError(
                f"{path}: DICOM compression '{syntax.name}' is not supported by pydicom; "
                "decompress it (e.g. `gdcmconv --raw in.dcm out.dcm`)"
            ) from None
        if not decoder.is_available:
            options = "; ".join(decoder.missing_dependencies)
            raise ImageError(
                f"{path}: DICOM pixel data is compressed with '{syntax.name}' and no "
                f"installed decoder handles it; install one ({options}), e.g. "
                "`pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg`, or "
                "decompress the file (`gdcmconv --raw in.dcm out.dcm`)"
            )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2", *_COLOR_PHOTOMETRIC):
        raise ImageError(
            f"{path}: unsupported Photometric Interpretation '{photometric}'; export the "
            "radiograph as MONOCHROME2 grey-scale"
        )
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
        warnings.append(f"multi-frame DICOM ({frames} frames): only frame 1 is used")
    if photometric in _COLOR_PHOTOMETRIC:
        return _color_to_grey(ds, pixels, photometric), warnings

    values = apply_modality_lut(pixels, ds)
    image, note = _apply_window(values, ds)
    if note:
        warnings.append(note)
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    warnings.extend(_pixel_spacing_warnings(ds))
    return image, warnings


def _apply_window(values: np.ndarray, ds) -> tuple[np.ndarray, str]:
    """Map modality values to [0, 1] with the file's VOI LUT/window, else a robust window."""
    from pydicom.pixels import apply_voi, apply_voi_lut

    has_lut = bool(ds.get("VOILUTSequence")) and all(
        key in ds.VOILUTSequence[0] for key in ("LUTDescriptor", "LUTData")
    )
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    note = ""
    if has_lut or has_window:
        try:
            if has_lut:
                # VOI LUTs index with integers; modality output is integral for these files.
                values = np.rint(values).astype(np.int64)
                mapped = apply_voi_lut(values, ds)
                descriptor = ds.VOILUTSequence[0].LUTDescriptor
                first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
                table = apply_voi(np.arange(first, first + entries, dtype=np.int64), ds)
                lo, hi = float(table.min()), float(table.max())
            else:
                mapped = apply_voi_lut(values, ds)
                # Inputs far outside any window give the window's output range.
                with np.errstate(over="ignore"):
                    lo, hi = apply_voi_lut(np.array([-1e30, 1e30]), ds)
            if hi > lo:
                return np.clip((mapped - lo) / (hi - lo), 0.0, 1.0), note
            note = "VOI LUT/window maps every pixel to one value; a percentile window is used"
        except (ValueError, NotImplementedError, AttributeError, IndexError) as exc:
            note = f"stored window/VOI LUT is invalid ({exc}); a percentile window is used"
    step = max(1, values.size // 1_000_000)  # about a million pixels give the same window
    lo, hi = np.percentile(values.ravel()[::step], _PERCENTILE_WINDOW)
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32), note
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0), note


def _color_to_grey(ds, pixels: np.ndarray, photometric: str) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    bits = int(ds.get("BitsStored", 8) or 8)
    grey = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.clip(grey / (2.0**bits - 1.0), 0.0, 1.0)


def _pixel_spacing_warnings(ds) -> list[str]:
    """Unknown spacing does not stop loading, but physical sizes cannot be checked."""
    modality = str(ds.get("Modality", "")).upper()
    # CR/DX store the detector spacing in ImagerPixelSpacing; PixelSpacing may be absent.
    keys = (
        ("ImagerPixelSpacing", "PixelSpacing")
        if modality in ("CR", "DX")
        else ("PixelSpacing", "ImagerPixelSpacing")
    )
    for key in keys:
        value = ds.get(key)
        if value is None:
            continue
        items = [value] if isinstance(value, str | int | float) else list(value)
        try:
            spacing = [float(v) for v in items]
        except (TypeError, ValueError):
            return [f"{key} '{value}' is not a number; pixel spacing (mm) unknown"]
        if len(spacing) != 2 or not all(v > 0 for v in spacing):
            return [
                f"{key} is {'/'.join(f'{v:g}' for v in spacing)}; pixel spacing (mm) unknown, "
                "so image scale cannot be checked"
            ]
        return []
    return [f"no {' or '.join(keys)}; pixel spacing (mm) unknown, so image scale cannot be checked"]


def _decode_pil(path: Path) -> tuple[np.ndarray, list[str]]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()  # decodes every pixel now, so truncated files fail here
            im = ImageOps.exif_transpose(opened)
    except UnidentifiedImageError:
        raise ImageError(
            f"{path}: not a readable {path.suffix.lstrip('.').upper()} image; the file is "
            "corrupt or has the wrong extension; export it again"
        ) from None
    warnings: list[str] = []
    if getattr(im, "n_frames", 1) > 1:
        warnings.append(f"multi-page image ({im.n_frames} pages): only page 1 is used")
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(im).astype(np.float64)
        if values.min() < 0 or values.max() > 65535:
            return _min_max(values), warnings
        peak = values.max()
        bits = next(b for b in _CONTAINER_BITS if peak < 2**b)
        return values / (2.0**bits - 1.0), warnings
    if mode == "F":
        values = np.asarray(im, dtype=np.float64)
        if values.size and np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1:
            return values, warnings
        return _min_max(values), warnings
    if mode != "L":
        im = im.convert("L")
    return np.asarray(im, dtype=np.float64) / 255.0, warnings


def _min_max(values: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(values.shape)
    return (values - lo) / (hi - lo)
