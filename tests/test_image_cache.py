"""ImageCache: decode once, re-decode what changed, survive damaged slots and indexes."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from progression.cohort import ImageCache, load_image, read_cohort
from progression.errors import ConfigError, ImageError

SIZE = 32


@pytest.fixture
def cohort_images(handmade_cohort, copy_cohort) -> list[str]:
    """The 12 image files (PNG, DICOM, TIFF, JPEG) of a private copy of the cohort."""
    return read_cohort(copy_cohort(handmade_cohort)).images["abs_path"].tolist()


def expected_u8(path: str) -> np.ndarray:
    return np.rint(load_image(path, SIZE) * 255).astype(np.uint8)


def test_images_are_decoded_once_and_read_back_exactly(tmp_path, cohort_images):
    cache = ImageCache(tmp_path / "cache", SIZE)
    slots = cache.ensure(cohort_images, progress=False)
    assert cache.decode_count == 12 and sorted(slots) == list(range(12))
    batch = cache.get(slots[[3, 0, 7]])
    assert batch.dtype == np.uint8 and batch.shape == (3, SIZE, SIZE)
    for image, k in zip(batch, [3, 0, 7]):
        np.testing.assert_array_equal(image, expected_u8(cohort_images[k]))
    # The second epoch, and another process opening the same cache, decode nothing.
    assert (cache.ensure(cohort_images, progress=False) == slots).all()
    other = ImageCache(tmp_path / "cache", SIZE)
    assert (other.ensure(cohort_images, progress=False) == slots).all()
    assert cache.decode_count == 12 and other.decode_count == 0
    assert other.stats["hits"] == 12 and other.stats["entries"] == 12


def test_a_touched_or_changed_file_is_decoded_again(tmp_path, cohort_images):
    ImageCache(tmp_path / "cache", SIZE).ensure(cohort_images, progress=False)
    touched, changed = Path(cohort_images[0]), Path(cohort_images[1])
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    Image.fromarray(np.full((40, 32), 255, dtype=np.uint8)).save(changed)  # all white now
    cache = ImageCache(tmp_path / "cache", SIZE)
    slots = cache.ensure(cohort_images, progress=False)
    assert cache.decode_count == 2 and cache.stats["stale"] == 2
    white = cache.get(slots[[1]])[0]
    # 40 x 32 -> 32 x 26 centred: columns 3-28 image, the rest zero padding
    assert white[:, 3:29].min() == 255 and white[:, :3].max() == 0 and white[:, 29:].max() == 0


def test_a_damaged_slot_is_detected_and_rebuilt(tmp_path, cohort_images):
    cache = ImageCache(tmp_path / "cache", SIZE)
    slots = cache.ensure(cohort_images, progress=False)
    # Overwrite the middle of slot 5's bytes, as a run killed mid-write would leave it.
    shard = cache.dir / "shard_00000.u8"
    with open(shard, "r+b") as handle:
        handle.seek(int(slots[5]) * SIZE * SIZE + 100)
        handle.write(b"\x7f" * 300)
    fresh = ImageCache(tmp_path / "cache", SIZE)
    again = fresh.ensure(cohort_images, progress=False)
    assert fresh.decode_count == 1 and fresh.stats["corrupt"] == 1
    assert (again == slots).all()
    np.testing.assert_array_equal(fresh.get(again[[5]])[0], expected_u8(cohort_images[5]))


def test_a_truncated_index_is_recovered(tmp_path, cohort_images, caplog):
    cache = ImageCache(tmp_path / "cache", SIZE)
    cache.ensure(cohort_images, progress=False)
    index = cache.dir / "index.json"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    fresh = ImageCache(tmp_path / "cache", SIZE)
    with caplog.at_level(logging.WARNING):
        slots = fresh.ensure(cohort_images, progress=False)
    assert "unreadable" in caplog.text
    assert fresh.decode_count == 12
    assert len(json.loads(index.read_text())["entries"]) == 12
    for k in (0, 11):
        np.testing.assert_array_equal(fresh.get(slots[[k]])[0], expected_u8(cohort_images[k]))


def test_bad_images_raise_or_are_skipped_with_a_warning(tmp_path, cohort_images, caplog):
    Path(cohort_images[2]).write_bytes(b"broken")
    cache = ImageCache(tmp_path / "cache", SIZE)
    with pytest.raises(ImageError, match=r"1 image\(s\) cannot be read") as exc:
        cache.ensure(cohort_images, progress=False)
    assert Path(cohort_images[2]).name in str(exc.value)
    with caplog.at_level(logging.WARNING):
        slots = cache.ensure(cohort_images, progress=False, skip_bad=True)
    assert "skipping 1 unreadable image(s)" in caplog.text
    assert slots[2] == -1 and (np.delete(slots, 2) >= 0).all()
    assert cache.get(slots[[2]]).max() == 0  # a skipped image reads as zeros
    assert cache.stats["bad"] == 2


def test_the_cache_is_never_placed_inside_a_cohort(handmade_cohort):
    with pytest.raises(ConfigError, match="inside the cohort directory"):
        ImageCache(handmade_cohort / "cache", SIZE)
    assert not (handmade_cohort / "cache").exists()


def test_default_location_is_progression_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PROGRESSION_CACHE_DIR", str(tmp_path / "envcache"))
    assert ImageCache(None, 64).dir == (tmp_path / "envcache" / "64").resolve()
    monkeypatch.delenv("PROGRESSION_CACHE_DIR")
    assert ImageCache("", 64).dir == (Path.home() / ".cache" / "progression" / "64").resolve()


def test_a_pickled_cache_reads_in_another_process_like_a_dataloader_worker(tmp_path, cohort_images):
    cache = ImageCache(tmp_path / "cache", SIZE)
    slots = cache.ensure(cohort_images, progress=False)
    expected = cache.get(slots)  # opens the memory map in this process
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone.get(slots), expected)


def test_concurrent_processes_decode_each_image_once(tmp_path, cohort_images):
    # Two processes (e.g. two DDP ranks) ensure the same images at once; the first takes
    # the lock and decodes, the second waits and finds them done.
    script = textwrap.dedent(
        f"""
        import json, sys
        from progression.cohort import ImageCache
        cache = ImageCache({str(tmp_path / "cache")!r}, {SIZE})
        slots = cache.ensure(json.loads(sys.argv[1]), progress=False, workers=1)
        print(json.dumps([cache.decode_count, slots.tolist()]))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(cohort_images)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(r[0] for r in results) == [0, 12]
    assert results[0][1] == results[1][1]
    cache = ImageCache(tmp_path / "cache", SIZE)
    slots = np.array(results[0][1])
    np.testing.assert_array_equal(cache.get(slots[[4]])[0], expected_u8(cohort_images[4]))
