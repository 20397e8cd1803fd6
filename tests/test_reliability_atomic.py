"""Nothing lost when a process is killed: outputs are replaced atomically, caches heal.

Each test SIGKILLs a real subprocess at a known point of its work (watched from outside,
no mocks) and checks what a user would find afterwards: the old file intact (never
truncated) and a cache that rebuilds exactly what is missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_reliability_support import kill_while_writing
from test_train_support import shared_run

from progression import cli
from progression.cohort import ImageCache, load_image

SIZE = 32  # pixels per side in the cache
N_IMAGES = 400
N_FIRST = 100  # cached by an earlier, completed run


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 240.0) -> bool:
    """Poll ``condition()`` every few ms until true; False if ``proc`` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.002)
    raise AssertionError(f"timed out after {timeout} s waiting for the subprocess")


@pytest.fixture
def radiographs(tmp_path) -> list[str]:
    """``N_IMAGES`` small 8-bit PNG 'films' (noise over a bright bar), seed 0."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "films"
    folder.mkdir()
    paths = []
    for i in range(N_IMAGES):
        image = rng.integers(20, 90, (48, 40), dtype=np.uint8)
        image[6:-6, 14:-14] = 230
        path = folder / f"film_{i:04d}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths


def test_image_cache_killed_mid_fill_rebuilds_only_what_is_missing(tmp_path, radiographs):
    cache_dir = tmp_path / "cache"
    ImageCache(cache_dir, SIZE).ensure(radiographs[:N_FIRST], progress=False, workers=1)
    shard = cache_dir / str(SIZE) / "shard_00000.u8"
    slot_bytes = SIZE * SIZE
    watched_slot = N_FIRST + 30  # the 31st new image: the fill is well under way

    script = textwrap.dedent(f"""
        import sys
        from progression.cohort import ImageCache
        paths = sys.stdin.read().split("\\n")
        ImageCache({str(cache_dir)!r}, {SIZE}).ensure(paths, progress=False, workers=1)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc.stdin.write("\n".join(radiographs).encode())
    proc.stdin.close()

    def slot_written() -> bool:
        with open(shard, "rb") as handle:
            handle.seek(watched_slot * slot_bytes)
            return any(handle.read(slot_bytes))

    try:
        reached = _wait_for(slot_written, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        output = proc.stdout.read().decode()
        proc.wait()
    assert reached, output
    if proc.returncode == 0:
        pytest.fail("the fill finished before it could be killed; make N_IMAGES larger")
    assert proc.returncode == -signal.SIGKILL, output

    cache = ImageCache(cache_dir, SIZE)
    slots = cache.ensure(radiographs, progress=False, workers=1)
    stats = cache.stats
    # The killed run's decodes were never committed to the index: they are redone, and
    # only they; the earlier run's images are reused as they are.
    assert stats["hits"] == N_FIRST and stats["corrupt"] == 0
    assert cache.decode_count == N_IMAGES - N_FIRST
    assert stats["entries"] == N_IMAGES and len(set(slots.tolist())) == N_IMAGES
    for path, image in zip(radiographs, cache.get(slots)):
        fresh = np.rint(load_image(path, SIZE) * 255).astype(np.uint8)
        np.testing.assert_array_equal(image, fresh, err_msg=path)
    assert not list((cache_dir / str(SIZE)).glob(".index.json.*.tmp"))


def test_predict_killed_while_writing_keeps_the_old_predictions_intact(tmp_path_factory, tmp_path):
    run = shared_run(tmp_path_factory)
    out = tmp_path / "predictions.csv"
    argv = ["predict", "--checkpoint", run.result.checkpoint_path, "--data", run.cohort,
            "--out", out, "--no-progress"]
    assert cli.main([str(a) for a in argv]) == 0
    old = out.read_bytes()

    # A second prediction (more horizons: a different, longer table) is killed as it
    # publishes the new file.
    code = kill_while_writing([*argv, "--horizons", "1,2,5"], out, skip=0, log=tmp_path / "kill.log")
    assert code == -signal.SIGKILL, (tmp_path / "kill.log").read_text()
    assert out.read_bytes() == old  # the old table, whole
    assert len(pd.read_csv(out)) == 2 * pd.read_csv(run.cohort / "patients.csv").shape[0]
    # the new table was complete on disk, in a temporary file that never replaced the old one
    leftovers = list(tmp_path.glob(".predictions.csv.*.tmp"))
    assert len(leftovers) == 1 and len(pd.read_csv(leftovers[0])) == 3 * len(pd.read_csv(out)) // 2
