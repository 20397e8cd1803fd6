"""Radiograph loading: real CR radiographs, hand-computed DICOM pixel pipelines, PNG/TIFF/JPEG."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.data import get_testdata_file

from progression.cohort import check_image, load_image
from progression.errors import ImageError


def _testdata(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} missing: install pydicom-data"
    return path


def test_extremity_cr_monochrome1_shows_bone_bright_and_air_dark():
    # RG3_UNCR: lower leg, CR, MONOCHROME1, 10-bit, window 550/1024. At 64 px the tibia
    # shaft is columns 33-36 of rows 0-39; direct exposure (air) beside the leg is columns
    # 18-23 (checked by eye on a saved PNG).
    image = load_image(_testdata("RG3_UNCR.dcm"), 64)
    assert image.shape == (64, 64) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    tibia, air = image[0:40, 33:37].mean(), image[0:40, 18:24].mean()
    assert tibia > 0.55
    assert air < 0.2


def test_chest_cr_15bit_monochrome1_shows_spine_brighter_than_lungs_and_pads_sides():
    # RG1_UNCR: chest PA, CR, MONOCHROME1, 15-bit, 1955 x 1841 (taller than wide).
    image = load_image(_testdata("RG1_UNCR.dcm"), 64)
    assert image.min() >= 0.0 and image.max() <= 1.0
    spine, left_lung, right_lung = (
        image[16:48, 30:34].mean(),
        image[16:40, 10:20].mean(),
        image[16:40, 44:54].mean(),
    )
    assert spine > left_lung + 0.15 and spine > right_lung + 0.15
    # 1841/1955 * 64 = 60 columns of image: 2 columns of zero padding on each side.
    assert image[:, :2].max() == 0.0 and image[:, 62:].max() == 0.0
    assert image[:, 2:62].mean() > 0.5


def test_monochrome1_with_linear_window_matches_hand_computation(tmp_path, write_dicom):
    # DICOM PS3.3 C.11.2.1.2.1 LINEAR, center c=150, width w=301 -> c-0.5=149.5, w-1=300:
    # y = ((x - 149.5) / 300 + 0.5) on [0, 1]; x=0 -> 0.001667, 100 -> 0.335, 200 -> 0.668,
    # 300 > 149.5 + 150 -> 1. MONOCHROME1 (low = bright) is then inverted: 1 - y.
    path = write_dicom(
        tmp_path / "m1.dcm",
        np.array([[0, 100], [200, 300]]),
        photometric="MONOCHROME1",
        WindowCenter=150,
        WindowWidth=301,
    )
    y = np.array(
        [[(0 - 149.5) / 300 + 0.5, (100 - 149.5) / 300 + 0.5], [(200 - 149.5) / 300 + 0.5, 1.0]]
    )
    np.testing.assert_allclose(load_image(path, 2), 1.0 - y, atol=1e-6)


def test_rescale_slope_intercept_applies_before_the_window(tmp_path, write_dicom):
    # stored 0, 10, 20, 30 -> modality x = 2 * stored - 10 = -10, 10, 30, 50.
    # LINEAR_EXACT window c=20, w=60: y = (x - 20) / 60 + 0.5 -> 0, 1/3, 2/3, 1.
    path = write_dicom(
        tmp_path / "rescaled.dcm",
        np.array([[0, 10], [20, 30]]),
        RescaleSlope=2,
        RescaleIntercept=-10,
        WindowCenter=20,
        WindowWidth=60,
        VOILUTFunction="LINEAR_EXACT",
    )
    np.testing.assert_allclose(load_image(path, 2), [[0.0, 1 / 3], [2 / 3, 1.0]], atol=1e-6)


def test_dicom_without_window_uses_the_0_5_to_99_5_percentile_window(tmp_path, write_dicom):
    stored = np.arange(100).reshape(10, 10) * 40  # 12-bit ramp 0..3960, no window in the file
    image = load_image(write_dicom(tmp_path / "ramp.dcm", stored), 10)
    # Percentiles of 100 evenly spaced values (linear interpolation): 0.5 % -> 0.495 steps
    # of 40 = 19.8, 99.5 % -> 98.505 steps = 3940.2.
    expected = np.clip((stored - 19.8) / (3940.2 - 19.8), 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-5)


def test_sixteen_bit_png_with_12_bit_data_is_scaled_by_4095(tmp_path):
    values = np.array([[0, 1000], [2000, 4095]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode in ("I;16", "I")
    np.testing.assert_allclose(load_image(tmp_path / "x.png", 2), values / 4095.0, atol=1e-6)


def test_sixteen_bit_png_using_the_full_range_is_scaled_by_65535(tmp_path):
    values = np.array([[0, 30000], [50000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "x.png")
    np.testing.assert_allclose(load_image(tmp_path / "x.png", 2), values / 65535.0, atol=1e-6)


@pytest.mark.parametrize("suffix", [".tif", ".tiff"])
def test_tiff_8_and_16_bit_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    v8 = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    v16 = rng.integers(0, 65536, (8, 8)).astype(np.uint16)
    v16[0, 0] = 65535  # uses the full 16-bit range
    Image.fromarray(v8).save(tmp_path / f"a{suffix}")
    Image.fromarray(v16).save(tmp_path / f"b{suffix}")
    np.testing.assert_allclose(load_image(tmp_path / f"a{suffix}", 8), v8 / 255.0, atol=1e-6)
    np.testing.assert_allclose(load_image(tmp_path / f"b{suffix}", 8), v16 / 65535.0, atol=1e-6)


def test_jpeg_round_trip_within_compression_error(tmp_path):
    x = np.linspace(0, 1, 32)
    smooth = (np.outer(x, x) * 255).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "x.jpg", quality=95)
    loaded = load_image(tmp_path / "x.jpg", 32)
    assert np.abs(loaded - smooth / 255.0).mean() < 0.01


def test_colour_png_becomes_grey(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., :] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(load_image(tmp_path / "rgb.png", 4), 200 / 255.0, atol=1 / 255)


def test_aspect_ratio_is_kept_and_the_rest_padded_with_zero(tmp_path):
    Image.fromarray(np.full((40, 20), 255, dtype=np.uint8)).save(tmp_path / "tall.png")
    image = load_image(tmp_path / "tall.png", 32)
    # 40 x 20 -> 32 x 16, centred: columns 8..23 are image, the rest padding.
    assert image.shape == (32, 32)
    assert image[:, :8].max() == 0.0 and image[:, 24:].max() == 0.0
    np.testing.assert_allclose(image[:, 8:24], 1.0, atol=1e-6)


def test_downscaling_is_antialiased(tmp_path):
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    Image.fromarray(checker).save(tmp_path / "checker.png")
    # Nearest-neighbour would give only 0s or 1s; an antialiasing filter averages to 0.5.
    np.testing.assert_allclose(load_image(tmp_path / "checker.png", 16), 0.5, atol=0.02)


def test_compressed_dicom_without_decoder_names_the_fix():
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    path = _testdata("JPEG-LL.dcm")  # JPEG Lossless, needs pylibjpeg-libjpeg or gdcm
    if get_decoder(JPEGLosslessSV1).is_available:
        assert load_image(path, 16).shape == (16, 16)
        return
    with pytest.raises(ImageError) as exc:
        load_image(path, 16)
    message = str(exc.value)
    assert "JPEG-LL.dcm" in message and "JPEG Lossless" in message
    assert "pip install pylibjpeg" in message and "gdcmconv" in message


def test_dicom_without_pixel_data_is_an_image_error(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID = "p1"
    ds.save_as(tmp_path / "header.dcm", enforce_file_format=True)
    with pytest.raises(ImageError, match="without pixel data"):
        load_image(tmp_path / "header.dcm", 8)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("gone.png", None, "not found"),
        ("empty.png", b"", "empty"),
        ("text.png", b"not an image at all", "not a readable PNG"),
        ("text.dcm", b"not a dicom file", "not a DICOM file"),
        ("scan.bmp", b"BM", "unsupported file type"),
    ],
)
def test_unreadable_files_raise_image_error_naming_the_file(tmp_path, name, content, expected):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageError, match=expected) as exc:
        load_image(tmp_path / name, 8)
    assert name in str(exc.value)


def test_truncated_png_is_reported_as_corrupt(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64)).astype(np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.png"):
        load_image(tmp_path / "cut.png", 16)


def test_pixel_spacing_zero_or_absent_warns_but_loads(tmp_path, write_dicom):
    pixels = np.arange(16).reshape(4, 4)
    good = write_dicom(tmp_path / "cr.dcm", pixels, modality="CR", spacing=(0.15, 0.15))
    zero = write_dicom(tmp_path / "zero.dcm", pixels, modality="DX", spacing=(0.0, 0.0))
    absent = write_dicom(tmp_path / "absent.dcm", pixels, modality="DX", spacing=None)
    assert check_image(good) == []
    assert any("ImagerPixelSpacing is 0/0" in w for w in check_image(zero))
    assert any("pixel spacing (mm) unknown" in w for w in check_image(absent))
    assert load_image(absent, 4).shape == (4, 4)


_VALID_BYTES: dict[str, bytes] = {}


def _valid_file_bytes(suffix: str, write_dicom) -> bytes:
    """A small valid file of each type, whose bytes the fuzzer mutates."""
    if suffix not in _VALID_BYTES:
        import io
        import tempfile
        from pathlib import Path

        pixels = (np.arange(64).reshape(8, 8) * 60).astype(np.uint16)
        if suffix == ".dcm":
            with tempfile.TemporaryDirectory() as tmp:
                path = write_dicom(Path(tmp) / "x.dcm", pixels, WindowCenter=2000, WindowWidth=4000)
                _VALID_BYTES[suffix] = path.read_bytes()
        else:
            buffer = io.BytesIO()
            fmt = {".png": "PNG", ".tif": "TIFF", ".jpg": "JPEG"}[suffix]
            Image.fromarray((pixels // 16).astype(np.uint8)).save(buffer, format=fmt)
            _VALID_BYTES[suffix] = buffer.getvalue()
    return _VALID_BYTES[suffix]


@pytest.mark.filterwarnings("ignore::UserWarning")  # decoders warn about the damage
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    suffix=st.sampled_from([".png", ".dcm", ".tif", ".jpg"]),
    data=st.binary(max_size=600),
)
def test_random_bytes_only_ever_raise_image_error(tmp_path, suffix, data):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        image = load_image(path, 8)
    except ImageError:
        return
    assert image.shape == (8, 8) and image.min() >= 0.0 and image.max() <= 1.0


@pytest.mark.filterwarnings("ignore::UserWarning")  # decoders warn about the damage
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    suffix=st.sampled_from([".png", ".dcm", ".tif", ".jpg"]),
    cut=st.integers(0, 4000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
)
def test_damaged_valid_files_only_ever_raise_image_error(tmp_path, write_dicom, suffix, cut, flips):
    data = bytearray(_valid_file_bytes(suffix, write_dicom))
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(bytes(data[: max(cut, 1)] if cut < len(data) else data))
    try:
        image = load_image(path, 8)
    except ImageError:
        return
    assert image.shape == (8, 8) and image.min() >= 0.0 and image.max() <= 1.0
